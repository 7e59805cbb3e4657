{{/*
matchConditions (CEL) let the API server decide, without calling us, that a request needs
no review. They are GA (and cannot be switched off) from Kubernetes 1.30; on older API
servers they are not rendered and the webhook's own in-process checks (exemptUsers,
exemptGroups, the break-glass group) decide the same thing after the call.
*/}}
{{- define "netpol-guard.matchConditionsSupported" -}}
{{- if semverCompare ">=1.30.0-0" .Capabilities.KubeVersion.Version -}}true{{- end -}}
{{- end -}}

{{/*
CEL: the request comes from config.exemptUsers / config.exemptGroups. Lists are rendered
with toJson, which is also a valid CEL list of string literals.
*/}}
{{- define "netpol-guard.exemptCEL" -}}
{{- $c := .Values.config -}}
{{- $parts := list -}}
{{- with $c.exemptUsers -}}
{{- $parts = append $parts (printf "request.userInfo.username in %s" (toJson .)) -}}
{{- end -}}
{{- with $c.exemptGroups -}}
{{- $parts = append $parts (printf "request.userInfo.groups.exists(g, g in %s)" (toJson .)) -}}
{{- end -}}
{{- join " || " $parts -}}
{{- end -}}

{{/*
matchConditions for webhooks whose handlers honour the exemptions: an exempt user's request
never leaves the API server. With managedUpdates, an UPDATE of a policy the controller
manages is still sent (the managed-policy guard ignores exemptions, in-process as here).
Call with (dict "root" . "managedUpdates" true|false).
*/}}
{{- define "netpol-guard.exemptMatchConditions" -}}
{{- $cel := include "netpol-guard.exemptCEL" .root -}}
{{- if and $cel (include "netpol-guard.matchConditionsSupported" .root) -}}
{{- $expr := printf "!(%s)" $cel -}}
{{- if .managedUpdates -}}
{{- $managed := `request.operation == "UPDATE" && has(oldObject.metadata.labels) && "app.kubernetes.io/managed-by" in oldObject.metadata.labels && oldObject.metadata.labels["app.kubernetes.io/managed-by"] == "netpol-guard"` -}}
{{- $expr = printf "%s || (%s)" $expr $managed -}}
{{- end -}}
matchConditions:
  - name: not-exempt
    expression: {{ include "netpol-guard.yamlQuote" $expr }}
{{- end -}}
{{- end -}}

{{/* The break-glass group's Namespace label changes never leave the API server, so they work while every replica is down. */}}
{{- define "netpol-guard.breakGlassMatchConditions" -}}
{{- $group := .Values.config.namespaceLabels.breakGlassGroup -}}
{{- if and $group (include "netpol-guard.matchConditionsSupported" .) -}}
matchConditions:
  - name: not-break-glass
    expression: {{ include "netpol-guard.yamlQuote" (printf "!(%s in request.userInfo.groups)" (toJson $group)) }}
{{- end -}}
{{- end -}}

{{/* A YAML single-quoted scalar: CEL reads as written, its double quotes need no escaping. */}}
{{- define "netpol-guard.yamlQuote" -}}
'{{ replace "'" "''" . }}'
{{- end -}}
