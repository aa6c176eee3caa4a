{{/* Name of the chart, or nameOverride. */}}
{{- define "vaultkms.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Prefix of every resource name: the release name, with the chart name unless
the release name already contains it.
*/}}
{{- define "vaultkms.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
Cluster-scoped names (ClusterRole, ClusterRoleBinding) carry the namespace
too: a release name is unique only within its namespace, and two releases
in two namespaces must not share or overwrite a ClusterRole.
*/}}
{{- define "vaultkms.clusterName" -}}
{{- printf "%s-%s" .Release.Namespace (include "vaultkms.fullname" .) | trunc 50 | trimSuffix "-" -}}
{{- end -}}

{{- define "vaultkms.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels every resource carries. */}}
{{- define "vaultkms.labels" -}}
helm.sh/chart: {{ include "vaultkms.chart" . }}
app.kubernetes.io/name: {{ include "vaultkms.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: vaultkms
{{- end -}}

{{/* Selector labels of one component; call with (dict "ctx" $ "component" "controller"). */}}
{{- define "vaultkms.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vaultkms.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "vaultkms.controller.serviceAccountName" -}}
{{- if .Values.controller.serviceAccount.create -}}
{{- default (printf "%s-controller" (include "vaultkms.fullname" .)) .Values.controller.serviceAccount.name -}}
{{- else -}}
{{- required "controller.serviceAccount.name is required when controller.serviceAccount.create is false" .Values.controller.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "vaultkms.auditor.serviceAccountName" -}}
{{- if .Values.auditor.serviceAccount.create -}}
{{- default (printf "%s-auditor" (include "vaultkms.fullname" .)) .Values.auditor.serviceAccount.name -}}
{{- else -}}
{{- required "auditor.serviceAccount.name is required when auditor.serviceAccount.create is false" .Values.auditor.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Image reference; call with (dict "ctx" $ "image" .Values.controller.image "value" "controller.image.tag"). */}}
{{- define "vaultkms.image" -}}
{{- $tag := default .ctx.Chart.AppVersion .image.tag -}}
{{- if eq $tag "latest" -}}
{{- fail (printf "%s: \"latest\" is not a version; pin a release tag such as %q" .value .ctx.Chart.AppVersion) -}}
{{- end -}}
{{- if .image.digest -}}
{{- printf "%s:%s@%s" .image.repository $tag .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* Vault address, checked. */}}
{{- define "vaultkms.vaultAddr" -}}
{{- $addr := required "vault.addr is required: the Vault address, e.g. --set vault.addr=https://vault.example:8200" .Values.vault.addr -}}
{{- range splitList "," $addr -}}
{{- if not (regexMatch "^https?://[^\\s,]+$" (trim .)) -}}
{{- fail (printf "vault.addr: %q is not an http(s):// URL" .) -}}
{{- end -}}
{{- end -}}
{{- $addr -}}
{{- end -}}
