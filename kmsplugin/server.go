package kmsplugin

import (
	"context"
	"net"
	"net/http"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	kmsapi "k8s.io/kms/apis/v2"
	"k8s.io/kms/pkg/service"
)

// Serve serves the KMS v2 API on lis until ctx ends, then stops accepting,
// lets in-flight calls finish for up to drain, and closes the listener
// (which removes the socket file).
func Serve(ctx context.Context, lis net.Listener, p *Plugin, drain time.Duration) error {
	// A fixed set of workers serves the calls, so their stacks, grown once
	// through the Vault client, are reused instead of grown again for
	// every call (a call finding every worker busy gets a goroutine of its
	// own, so none waits for a worker).
	srv := grpc.NewServer(grpc.NumStreamWorkers(uint32(max(8, 4*runtime.GOMAXPROCS(0)))))
	// GRPCService only adapts the service interface to the generated gRPC
	// types; the listener is ours, so its permissions are too.
	kmsapi.RegisterKeyManagementServiceServer(srv, service.NewGRPCService(lis.Addr().String(), drain, p))
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	stopped := make(chan struct{})
	go func() {
		srv.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(drain):
		srv.Stop()
	}
	return nil
}

// HealthHandler serves /healthz (the process is alive), /readyz (the plugin
// would tell kube-apiserver "ok"; otherwise 503 with the reason) and
// /metrics.
func HealthHandler(p *Plugin, gather prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		h := p.Health()
		if h != healthOK {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		w.Write([]byte(h + "\n"))
	})
	mux.Handle("/metrics", promhttp.HandlerFor(gather, promhttp.HandlerOpts{}))
	return mux
}
