package syncer

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"

	"github.com/vaultkms/vaultkms/api/v1alpha1"
)

// metadataOnly asks the API server to answer a write with the object's
// metadata alone (its PartialObjectMetadata), which every write handler
// of kube-apiserver honours, as protobuf. The metadata of a written object
// is mostly its managedFields; as JSON, encoding them cost the API server
// and decoding them the controller more than the rest of a status write's
// answer did. Protobuf is offered for PartialObjectMetadata by the handlers
// of built-in and custom resources alike; JSON stays as a fallback.
const metadataOnly = "application/vnd.kubernetes.protobuf;as=PartialObjectMetadata;g=meta.k8s.io;v=v1," +
	"application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"

// newMetaDecoder decodes a PartialObjectMetadata in either form.
func newMetaDecoder() (runtime.Decoder, error) {
	s := runtime.NewScheme()
	if err := metav1.AddMetaToScheme(s); err != nil {
		return nil, fmt.Errorf("decoder of metadata-only answers: %w", err)
	}
	return serializer.NewCodecFactory(s).UniversalDeserializer(), nil
}

// MetadataAnswers makes the writes of every sync, the Secret's create or
// apply and the VaultSecret's status, and asks the API server to answer
// each with the object's metadata only. After a write the controller needs
// nothing of the answer but metadata (the new resourceVersion, the
// Secret's annotations), yet a whole answer costs the API server an
// encoding and the controller a decoding: for a status write, the
// controller's largest single cost when a thousand VaultSecrets sync at
// once.
type MetadataAnswers struct {
	status, secrets rest.Interface
	decoder         runtime.Decoder
}

// NewMetadataAnswers writes through cfg and hc (the manager's, so the
// connection and its limits are shared). Status goes as JSON (a custom
// resource has no other form); Secrets go as protobuf, as the manager's
// client sends them.
func NewMetadataAnswers(cfg *rest.Config, hc *http.Client) (*MetadataAnswers, error) {
	status, err := metadataClient(cfg, hc, runtime.ContentTypeJSON)
	if err != nil {
		return nil, err
	}
	secrets, err := metadataClient(cfg, hc, runtime.ContentTypeProtobuf)
	if err != nil {
		return nil, err
	}
	decoder, err := newMetaDecoder()
	if err != nil {
		return nil, err
	}
	return &MetadataAnswers{status: status, secrets: secrets, decoder: decoder}, nil
}

func metadataClient(cfg *rest.Config, hc *http.Client, contentType string) (rest.Interface, error) {
	c := rest.CopyConfig(cfg)
	// Paths are absolute: one client serves any group.
	c.APIPath, c.GroupVersion = "/", &schema.GroupVersion{}
	c.ContentType, c.AcceptContentTypes = contentType, metadataOnly
	c.NegotiatedSerializer = clientgoscheme.Codecs.WithoutConversion()
	rc, err := rest.RESTClientForConfigAndClient(c, hc)
	if err != nil {
		return nil, fmt.Errorf("API client for metadata-only answers: %w", err)
	}
	return rc, nil
}

// UpdateStatus writes vs's status (a PUT of the status subresource, so a
// stale resourceVersion is a conflict). On success vs's metadata is the
// API server's and its status is what was sent.
func (m *MetadataAnswers) UpdateStatus(ctx context.Context, vs *v1alpha1.VaultSecret) error {
	out := *vs
	out.TypeMeta = metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "VaultSecret"}
	body, err := json.Marshal(&out)
	if err != nil {
		return err
	}
	gv := v1alpha1.GroupVersion
	raw, err := answer(m.status.Put().AbsPath("/apis", gv.Group, gv.Version, "namespaces", vs.Namespace, "vaultsecrets", vs.Name, "status").
		Body(body).Do(ctx))
	if err != nil {
		return err
	}
	return answeredMetadata(m.decoder, raw, &vs.ObjectMeta)
}

// CreateSecret creates s as fieldManager. On success s's metadata is the
// API server's and the rest of it is what was sent.
func (m *MetadataAnswers) CreateSecret(ctx context.Context, s *corev1.Secret, fieldManager string) error {
	out := *s
	out.TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"}
	raw, err := answer(m.secrets.Post().AbsPath("/api/v1/namespaces", s.Namespace, "secrets").
		Param("fieldManager", fieldManager).Body(runtime.Object(&out)).Do(ctx))
	if err != nil {
		return err
	}
	return answeredMetadata(m.decoder, raw, &s.ObjectMeta)
}

// ApplySecret server-side applies body (an apply configuration of s's
// name and namespace) as fieldManager, taking over conflicting fields. On
// success s's metadata is the API server's.
func (m *MetadataAnswers) ApplySecret(ctx context.Context, s *corev1.Secret, body []byte, fieldManager string) error {
	raw, err := answer(m.secrets.Patch(types.ApplyPatchType).AbsPath("/api/v1/namespaces", s.Namespace, "secrets", s.Name).
		Param("fieldManager", fieldManager).Param("force", "true").Body(body).Do(ctx))
	if err != nil {
		return err
	}
	return answeredMetadata(m.decoder, raw, &s.ObjectMeta)
}

// answer is a write's body, or its error as the API server gave it:
// Result.Raw alone returns only an error made from the HTTP status ("the
// server rejected our request due to an error in our request"), dropping
// the Status in the body that says what refused the write (an admission
// policy's message, a quota, the conflicting field), which is what a
// VaultSecret's Ready condition must show.
func answer(res rest.Result) ([]byte, error) {
	if err := res.Error(); err != nil {
		return nil, err
	}
	return res.Raw()
}

// answeredMetadata reads a PartialObjectMetadata answer, protobuf or
// JSON, into meta.
func answeredMetadata(dec runtime.Decoder, raw []byte, meta *metav1.ObjectMeta) error {
	var got metav1.PartialObjectMetadata
	_, gvk, err := dec.Decode(raw, nil, &got)
	if err != nil {
		return fmt.Errorf("read the API server's answer: %w", err)
	}
	if gvk == nil || gvk.Kind != "PartialObjectMetadata" {
		return fmt.Errorf("the API server answered with a %v, not the object's metadata alone", gvk)
	}
	if got.ResourceVersion == "" {
		return fmt.Errorf("the API server's answer holds no resourceVersion")
	}
	*meta = got.ObjectMeta
	return nil
}
