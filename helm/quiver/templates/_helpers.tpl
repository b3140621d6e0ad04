{{/* Names, labels and the pieces shared by every Quiver container. */}}

{{- define "quiver.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "quiver.fullname" -}}
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

{{- define "quiver.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "quiver.labels" -}}
helm.sh/chart: {{ include "quiver.chart" . }}
{{ include "quiver.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: quiver
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "quiver.selectorLabels" -}}
app.kubernetes.io/name: {{ include "quiver.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of one component (serve, ingest, apply, test): call with (dict "root" $ "component" "serve"). */}}
{{- define "quiver.componentLabels" -}}
{{ include "quiver.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "quiver.componentSelectorLabels" -}}
{{ include "quiver.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "quiver.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "quiver.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "quiver.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Logging, and where the online store is, with its credentials taken from a Secret. */}}
{{- define "quiver.storeEnv" -}}
- name: QUIVER_LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
- name: RUST_LOG
  value: {{ .Values.logLevel | quote }}
- name: QUIVER_STORE
  value: scylla
- name: QUIVER_CQL_NODES
  value: {{ join "," .Values.store.cqlNodes | quote }}
- name: QUIVER_KEYSPACE
  value: {{ .Values.store.keyspace | quote }}
- name: QUIVER_CONSISTENCY
  value: {{ .Values.store.consistency | quote }}
- name: QUIVER_CQL_TIMEOUT_SECS
  value: {{ .Values.store.requestTimeoutSeconds | quote }}
{{- with .Values.store.auth }}
{{- if .existingSecret }}
- name: QUIVER_CQL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .usernameKey }}
- name: QUIVER_CQL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .passwordKey }}
{{- end }}
{{- end }}
{{- include "quiver.tlsEnv" (dict "prefix" "QUIVER_CQL_TLS" "dir" "/etc/quiver/tls/cql" "tls" .Values.store.tls) }}
{{- end -}}

{{/* Where Kafka is, with SASL credentials taken from a Secret. */}}
{{- define "quiver.kafkaEnv" -}}
- name: QUIVER_KAFKA_BROKERS
  value: {{ .Values.kafka.brokers | quote }}
{{- with .Values.kafka.sasl }}
{{- if .mechanism }}
- name: QUIVER_KAFKA_SASL_MECHANISM
  value: {{ .mechanism | quote }}
- name: QUIVER_KAFKA_SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .usernameKey }}
- name: QUIVER_KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .passwordKey }}
{{- end }}
{{- end }}
{{- include "quiver.tlsEnv" (dict "prefix" "QUIVER_KAFKA_TLS" "dir" "/etc/quiver/tls/kafka" "tls" .Values.kafka.tls) }}
{{- end -}}

{{/* The TLS switch and the paths of the mounted Secret's files: (dict "prefix" "dir" "tls"). */}}
{{- define "quiver.tlsEnv" -}}
{{- if .tls.enabled }}
- name: {{ .prefix }}
  value: "true"
{{- if .tls.existingSecret }}
- name: {{ .prefix }}_CA_FILE
  value: {{ printf "%s/ca.crt" .dir }}
{{- if .tls.clientCertificate }}
- name: {{ .prefix }}_CERT_FILE
  value: {{ printf "%s/tls.crt" .dir }}
- name: {{ .prefix }}_KEY_FILE
  value: {{ printf "%s/tls.key" .dir }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Volumes of the TLS Secrets, for the store and, when kafka is true, for Kafka: (dict "root" $ "kafka" true). */}}
{{- define "quiver.tlsVolumes" -}}
{{- $store := .root.Values.store.tls -}}
{{- $kafka := .root.Values.kafka.tls -}}
{{- if and $store.enabled $store.existingSecret }}
- name: cql-tls
  secret:
    secretName: {{ $store.existingSecret }}
    defaultMode: 0440
{{- end }}
{{- if and .kafka $kafka.enabled $kafka.existingSecret }}
- name: kafka-tls
  secret:
    secretName: {{ $kafka.existingSecret }}
    defaultMode: 0440
{{- end }}
{{- end -}}

{{- define "quiver.tlsVolumeMounts" -}}
{{- $store := .root.Values.store.tls -}}
{{- $kafka := .root.Values.kafka.tls -}}
{{- if and $store.enabled $store.existingSecret }}
- name: cql-tls
  mountPath: /etc/quiver/tls/cql
  readOnly: true
{{- end }}
{{- if and .kafka $kafka.enabled $kafka.existingSecret }}
- name: kafka-tls
  mountPath: /etc/quiver/tls/kafka
  readOnly: true
{{- end }}
{{- end -}}

{{/* Zones first, then nodes, unless the values give their own constraints: (dict "root" $ "component" "serve" "constraints" list). */}}
{{- define "quiver.topologySpread" -}}
{{- if .constraints }}
{{- toYaml .constraints }}
{{- else }}
- maxSkew: 1
  topologyKey: topology.kubernetes.io/zone
  whenUnsatisfiable: ScheduleAnyway
  labelSelector:
    matchLabels:
      {{- include "quiver.componentSelectorLabels" . | nindent 6 }}
- maxSkew: 1
  topologyKey: kubernetes.io/hostname
  whenUnsatisfiable: ScheduleAnyway
  labelSelector:
    matchLabels:
      {{- include "quiver.componentSelectorLabels" . | nindent 6 }}
{{- end }}
{{- end -}}
