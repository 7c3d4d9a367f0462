{{/*
Names and labels shared by every template.
*/}}

{{/* The chart's name, "herald" unless nameOverride. */}}
{{- define "herald.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Prefix of object names: the release name if it contains the chart name, else release-chart. */}}
{{- define "herald.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The operator's objects: "herald-operator" for a release named herald. */}}
{{- define "herald.operator.fullname" -}}
{{- printf "%s-operator" (include "herald.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The operator's ServiceAccount. */}}
{{- define "herald.operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "herald.operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The leader-election Lease: operator.args.leaseName, else the operator's full name. */}}
{{- define "herald.operator.leaseName" -}}
{{- default (include "herald.operator.fullname" .) .Values.operator.args.leaseName }}
{{- end }}

{{/* The operator image reference. */}}
{{- define "herald.operator.image" -}}
{{- $image := .Values.operator.image }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository (default .Chart.AppVersion $image.tag) }}
{{- end }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "herald.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/part-of: herald
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels of the operator pods (e2e/kit/src/stack.rs selects on the name). */}}
{{- define "herald.operator.selectorLabels" -}}
app.kubernetes.io/name: herald-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of the operator's objects. */}}
{{- define "herald.operator.labels" -}}
{{ include "herald.labels" . }}
{{ include "herald.operator.selectorLabels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{/*
The operator's arguments: every operator.args key as --kebab-case=value (sorted), with
the metrics address and Lease name the chart's other objects rely on, then extraArgs.
*/}}
{{- define "herald.operator.args" -}}
{{- $args := deepCopy .Values.operator.args }}
{{- $_ := set $args "leaseName" (include "herald.operator.leaseName" .) }}
{{- $_ := set $args "metricsAddr" (printf "0.0.0.0:%d" (int .Values.operator.metricsPort)) }}
{{- range $key, $value := $args }}
{{- if not (kindIs "invalid" $value) }}
- {{ printf "--%s=%v" (kebabcase $key) $value | quote }}
{{- end }}
{{- end }}
{{- range .Values.operator.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end }}
