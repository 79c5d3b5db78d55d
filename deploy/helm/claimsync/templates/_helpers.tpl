{{/*
Names, labels and the values' cross-checks shared by every template: which credential form is in use, the claim
namespace (from either place), and the rules the schema cannot say, each failing with a message naming the keys.
*/}}

{{- define "claimsync.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "claimsync.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "claimsync.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "claimsync.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/*
The name of a cluster-scoped object (ClusterRole, ClusterRoleBinding): the release's namespace is part of it, so
releases in two namespaces never claim the same one.
*/}}
{{- define "claimsync.clusterName" -}}
{{- printf "%s:%s" .Release.Namespace (include "claimsync.fullname" .) -}}
{{- end -}}

{{/* The ServiceAccount of the uninstall hook, which runs `claimsync disconnect`. */}}
{{- define "claimsync.uninstallName" -}}
{{- printf "%s-uninstall" (include "claimsync.fullname" .) -}}
{{- end -}}

{{/* The Secret the chart renders from upbound.token. */}}
{{- define "claimsync.renderedSecret" -}}
{{- printf "%s-control-plane" (include "claimsync.fullname" .) -}}
{{- end -}}

{{/* The claim namespace, from spaces.controlPlane (the MCP Connector's key) or controlPlane. */}}
{{- define "claimsync.claimNamespace" -}}
{{- .Values.spaces.controlPlane.claimNamespace | default .Values.controlPlane.claimNamespace -}}
{{- end -}}

{{/* Whether the Upbound token form is in use. */}}
{{- define "claimsync.tokenForm" -}}
{{- if .Values.upbound.token }}true{{ end -}}
{{- end -}}

{{/*
The control plane's kubeconfig as `--control-plane-kubeconfig-secret` wants it: <namespace>/<name>:<key>. A Secret
named in the values, else the one rendered from the token.
*/}}
{{- define "claimsync.kubeconfigSecretRef" -}}
{{- $plain := .Values.controlPlane.kubeconfigSecret -}}
{{- $spaces := .Values.spaces.controlPlane.kubeconfigSecret -}}
{{- if $plain.name -}}
{{- printf "%s/%s:%s" .Release.Namespace $plain.name $plain.key -}}
{{- else if $spaces.name -}}
{{- printf "%s/%s:%s" .Release.Namespace $spaces.name $spaces.key -}}
{{- else -}}
{{- printf "%s/%s:kubeconfig" .Release.Namespace (include "claimsync.renderedSecret" .) -}}
{{- end -}}
{{- end -}}

{{/* The name of the Secret claimsync reads the control plane's kubeconfig from (for its Role). */}}
{{- define "claimsync.kubeconfigSecretName" -}}
{{- (include "claimsync.kubeconfigSecretRef" . | splitList "/" | last | splitList ":" | first) -}}
{{- end -}}

{{/* The rules the schema cannot say; included by the Deployment, so every render checks them. */}}
{{- define "claimsync.validate" -}}
{{- $plain := .Values.controlPlane -}}
{{- $spaces := .Values.spaces.controlPlane -}}
{{- if and $plain.claimNamespace $spaces.claimNamespace (ne $plain.claimNamespace $spaces.claimNamespace) -}}
{{- fail (printf "controlPlane.claimNamespace (%s) and spaces.controlPlane.claimNamespace (%s) differ: give one of them" $plain.claimNamespace $spaces.claimNamespace) -}}
{{- end -}}
{{- if and $plain.kubeconfigSecret.name $spaces.kubeconfigSecret.name -}}
{{- fail "controlPlane.kubeconfigSecret and spaces.controlPlane.kubeconfigSecret are both set: give one of them" -}}
{{- end -}}
{{- $secret := or $plain.kubeconfigSecret.name $spaces.kubeconfigSecret.name -}}
{{- if and $secret .Values.upbound.token -}}
{{- fail "both credential forms are set: upbound.token and a kubeconfig Secret (controlPlane.kubeconfigSecret or spaces.controlPlane.kubeconfigSecret). Give one: the Secret alone, or upbound.token with spaces.host, spaces.controlPlane.name and spaces.controlPlane.group" -}}
{{- end -}}
{{- if not (or $secret .Values.upbound.token) -}}
{{- fail "no credentials for the control plane: set upbound.token (with upbound.account, spaces.host, spaces.controlPlane.name and spaces.controlPlane.group) or a kubeconfig Secret (controlPlane.kubeconfigSecret.name or spaces.controlPlane.kubeconfigSecret.name)" -}}
{{- end -}}
{{- if .Values.upbound.token -}}
{{- $missing := list -}}
{{- range $key, $value := dict "upbound.account" .Values.upbound.account "spaces.host" .Values.spaces.host "spaces.controlPlane.name" $spaces.name "spaces.controlPlane.group" $spaces.group -}}
{{- if not $value }}{{ $missing = append $missing $key }}{{ end -}}
{{- end -}}
{{- if $missing -}}
{{- fail (printf "%s required with upbound.token: the chart builds the Spaces endpoint https://<spaces.host>/apis/spaces.upbound.io/v1beta1/namespaces/<spaces.controlPlane.group>/controlplanes/<spaces.controlPlane.name>/k8s from them" (join ", " $missing)) -}}
{{- end -}}
{{- end -}}
{{- if not .Values.claimGroups -}}
{{- fail "claimGroups is required: list the API groups of the claims to replicate (e.g. --set claimGroups={k8s.starter.org}); the RBAC on claims grants exactly these. [\"*\"] means every group and grants get/list/watch/patch on every resource of every API group" -}}
{{- end -}}
{{- if and (has "*" .Values.claimGroups) (gt (len .Values.claimGroups) 1) -}}
{{- fail "claimGroups: \"*\" already means every group; give it alone, or list the groups" -}}
{{- end -}}
{{- end -}}
