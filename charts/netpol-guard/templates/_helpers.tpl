{{/* Names: every object is <fullname> or <fullname>-<suffix>. */}}
{{- define "netpol-guard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "netpol-guard.fullname" -}}
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

{{- define "netpol-guard.serviceAccountName" -}}
{{- default (include "netpol-guard.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{/* The Secret holding tls.crt/tls.key (and ca.crt) the pods mount. */}}
{{- define "netpol-guard.tlsSecretName" -}}
{{- if eq .Values.certificates.mode "existingSecret" -}}
{{- .Values.certificates.existingSecret.name -}}
{{- else -}}
{{- printf "%s-tls" (include "netpol-guard.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* The Lease the replicas elect a leader with (certificate management, isolation controller). */}}
{{- define "netpol-guard.leaseName" -}}
{{- printf "%s-leader" (include "netpol-guard.fullname" .) -}}
{{- end -}}

{{- define "netpol-guard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "netpol-guard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The webhook pods only (the uninstall hook's pod shares selectorLabels, not this). */}}
{{- define "netpol-guard.webhookSelectorLabels" -}}
{{ include "netpol-guard.selectorLabels" . }}
app.kubernetes.io/component: webhook
{{- end -}}

{{- define "netpol-guard.labels" -}}
{{ include "netpol-guard.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "netpol-guard.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Any mutation on means the MutatingWebhookConfiguration exists. */}}
{{- define "netpol-guard.mutating" -}}
{{- $m := .Values.config.mutations -}}
{{- if or $m.addDnsEgress $m.explicitPolicyTypes $m.exceptMetadataAddress -}}true{{- end -}}
{{- end -}}

{{/*
The server's config.yaml. isolation.controllerUsers left at the value in values.yaml
(the server's built-in default) is replaced by this release's ServiceAccount, so the
controller may write the policies it manages whatever the namespace and names are.

The names of objects the chart creates (TLS Secret, Service, webhook configurations,
leader Lease) and whether certificates are self-managed are set here from the release
and certificates.mode, so the server always manages exactly the objects the chart made
and its RBAC names. A value for them in config is a mistake: fail and say so.
*/}}
{{- define "netpol-guard.config" -}}
{{- $cfg := deepCopy .Values.config -}}
{{- $default := list "system:serviceaccount:netpol-guard:netpol-guard" -}}
{{- if eq (toJson $cfg.isolation.controllerUsers) (toJson $default) -}}
{{- $sa := printf "system:serviceaccount:%s:%s" .Release.Namespace (include "netpol-guard.serviceAccountName" .) -}}
{{- $_ := set $cfg.isolation "controllerUsers" (list $sa) -}}
{{- end -}}
{{- /* YAML reads an unquoted `off` as false; as a rule severity it can only mean "off". */ -}}
{{- range $rule, $sev := ($cfg.rules | default dict) -}}
{{- if eq (toJson $sev) "false" -}}
{{- $_ := set $cfg.rules $rule "off" -}}
{{- end -}}
{{- end -}}
{{- $fullname := include "netpol-guard.fullname" . -}}
{{- $computed := dict
      "certificates.selfManaged" (list $cfg.certificates "selfManaged" false (eq .Values.certificates.mode "selfManaged") "certificates.mode")
      "certificates.secretName" (list $cfg.certificates "secretName" "netpol-guard-tls" (include "netpol-guard.tlsSecretName" .) "fullnameOverride or certificates.existingSecret.name")
      "certificates.serviceName" (list $cfg.certificates "serviceName" "netpol-guard" $fullname "fullnameOverride")
      "certificates.webhookConfigName" (list $cfg.certificates "webhookConfigName" "netpol-guard" $fullname "fullnameOverride")
      "leaderElection.leaseName" (list $cfg.leaderElection "leaseName" "netpol-guard-leader" (include "netpol-guard.leaseName" .) "fullnameOverride")
      "audit.ownerClusterRole" (list $cfg.audit "ownerClusterRole" "" $fullname "fullnameOverride") -}}
{{- range $key, $c := $computed -}}
{{- $section := index $c 0 -}}
{{- $field := index $c 1 -}}
{{- if ne (toJson (index $section $field)) (toJson (index $c 2)) -}}
{{- fail (printf "config.%s is set by the chart (to %v here); leave it out and use %s instead" $key (index $c 3) (index $c 4)) -}}
{{- end -}}
{{- $_ := set $section $field (index $c 3) -}}
{{- end -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/*
Namespaces the webhooks never see: kube-system, the release namespace (so the guard can
always be repaired), configured extras, and anything labeled netpol-guard.io/ignore=true.
*/}}
{{- define "netpol-guard.namespaceSelector" -}}
matchExpressions:
  {{- include "netpol-guard.excludedByName" . | nindent 2 }}
  - key: netpol-guard.io/ignore
    operator: NotIn
    values: ["true"]
{{- end -}}

{{/* The namespaceSelector expression for the namespaces left out by name (the Namespace label guard uses it alone). */}}
{{- define "netpol-guard.excludedByName" -}}
- key: kubernetes.io/metadata.name
  operator: NotIn
  values:
    {{- toYaml (uniq (concat (list "kube-system" .Release.Namespace) .Values.webhook.excludeNamespaces)) | nindent 4 }}
{{- end -}}

{{- define "netpol-guard.clientConfig" -}}
service:
  name: {{ include "netpol-guard.fullname" .root }}
  namespace: {{ .root.Release.Namespace }}
  path: {{ .path }}
  port: {{ .root.Values.service.port }}
{{- if eq .root.Values.certificates.mode "existingSecret" }}
caBundle: {{ .root.Values.certificates.existingSecret.caBundle }}
{{- end }}
{{- end -}}

{{/* certManager mode: cert-manager's CA injector fills caBundle from this Certificate. */}}
{{- define "netpol-guard.webhookAnnotations" -}}
{{- if eq .Values.certificates.mode "certManager" -}}
cert-manager.io/inject-ca-from: {{ printf "%s/%s" .Release.Namespace (include "netpol-guard.fullname" .) }}
{{- end -}}
{{- end -}}

{{/* The restricted Pod Security Standard, shared by the webhook pods and the hook Job. */}}
{{- define "netpol-guard.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "netpol-guard.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}
