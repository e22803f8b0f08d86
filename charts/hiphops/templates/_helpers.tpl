{{/* Names. The full name is the release name when it already holds the chart name. */}}
{{- define "hiphops.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "hiphops.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "hiphops.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "hiphops.labels" -}}
helm.sh/chart: {{ include "hiphops.chart" . }}
app.kubernetes.io/name: {{ include "hiphops.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "operator"). */}}
{{- define "hiphops.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hiphops.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "hiphops.componentLabels" -}}
{{ include "hiphops.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "hiphops.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "hiphops.operatorServiceAccount" -}}
{{- default (printf "%s-operator" (include "hiphops.fullname" .)) .Values.operator.serviceAccount.name -}}
{{- end -}}

{{- define "hiphops.gatewayServiceAccount" -}}
{{- default (printf "%s-gateway" (include "hiphops.fullname" .)) .Values.gateway.serviceAccount.name -}}
{{- end -}}

{{- define "hiphops.intakeSecret" -}}
{{- default (printf "%s-intake-token" (include "hiphops.fullname" .)) .Values.intake.existingSecret -}}
{{- end -}}

{{- define "hiphops.intakeService" -}}
{{- printf "%s-intake" (include "hiphops.fullname" .) -}}
{{- end -}}

{{- define "hiphops.peeringName" -}}
{{- default (include "hiphops.fullname" .) .Values.operator.peering.name -}}
{{- end -}}

{{/* Where the intake token is mounted, in both components. */}}
{{- define "hiphops.intakeTokenDir" -}}/var/run/hiphops/intake{{- end -}}

{{/* Namespaces that get the task service account, one per line. */}}
{{- define "hiphops.taskNamespaces" -}}
{{- $namespaces := .Values.watchNamespaces -}}
{{- if not $namespaces -}}
{{- $namespaces = .Values.tasks.serviceAccount.namespaces -}}
{{- end -}}
{{- range (uniq $namespaces) }}
{{ . }}
{{- end -}}
{{- end -}}

{{/* The restricted security context of every container. */}}
{{- define "hiphops.containerSecurityContext" -}}
runAsNonRoot: true
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "hiphops.podSecurityContext" -}}
runAsNonRoot: true
{{- with .Values.securityContext.runAsUser }}
runAsUser: {{ . }}
{{- end }}
{{- with .Values.securityContext.runAsGroup }}
runAsGroup: {{ . }}
{{- end }}
{{- with .Values.securityContext.fsGroup }}
fsGroup: {{ . }}
{{- end }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Scheduling fields shared by both Deployments: (dict "root" $ "values" .Values.operator). */}}
{{- define "hiphops.scheduling" -}}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end -}}

{{/* A value for an environment variable, quoted. Values from YAML files are float64 in Helm:
     numbers are printed as integers so that 1000000 does not become "1e+06". */}}
{{- define "hiphops.envValue" -}}
{{- if or (kindIs "float64" .) (kindIs "int64" .) (kindIs "int" .) -}}
{{- . | int64 | toString | quote -}}
{{- else -}}
{{- . | toString | quote -}}
{{- end -}}
{{- end -}}
