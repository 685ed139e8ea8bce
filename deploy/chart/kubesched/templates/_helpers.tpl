{{/* Names and labels shared by the templates. */}}

{{- define "kubesched.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kubesched.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "kubesched.labels" -}}
app.kubernetes.io/name: {{ include "kubesched.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "kubesched.schedulerSelector" -}}
app.kubernetes.io/name: {{ include "kubesched.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: scheduler
{{- end -}}

{{- define "kubesched.agentSelector" -}}
app.kubernetes.io/name: {{ include "kubesched.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: agent
{{- end -}}

{{- define "kubesched.schedulerServiceAccount" -}}
{{- default (printf "%s-scheduler" (include "kubesched.fullname" .)) .Values.serviceAccount.schedulerName -}}
{{- end -}}

{{- define "kubesched.agentServiceAccount" -}}
{{- default (printf "%s-agent" (include "kubesched.fullname" .)) .Values.serviceAccount.agentName -}}
{{- end -}}

{{/* image REPOSITORY TAG: with the optional registry prefix. */}}
{{- define "kubesched.image" -}}
{{- $registry := index . 0 -}}
{{- $repo := index . 1 -}}
{{- $tag := index . 2 -}}
{{- if $registry -}}
{{- printf "%s/%s:%s" (trimSuffix "/" $registry) $repo $tag -}}
{{- else -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding the annotation signing key. */}}
{{- define "kubesched.signingSecret" -}}
{{- default (printf "%s-signing-key" (include "kubesched.fullname" .)) .Values.signingKey.existingSecret -}}
{{- end -}}
