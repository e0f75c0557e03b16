{{/* Names ------------------------------------------------------------------------------ */}}

{{- define "mpp.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* <release>-<chart>, or the release alone when it already contains the chart's name. */}}
{{- define "mpp.fullname" -}}
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

{{/* The name of one service's objects: <fullname>-<service>. Call with (dict "root" $ "name" "ingest"). */}}
{{- define "mpp.serviceFullname" -}}
{{- printf "%s-%s" (include "mpp.fullname" .root) .name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mpp.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mpp.labels" -}}
helm.sh/chart: {{ include "mpp.chart" . }}
{{ include "mpp.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mpp
{{- end -}}

{{- define "mpp.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mpp.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of one service's objects. Call with (dict "root" $ "name" "ingest"). */}}
{{- define "mpp.componentLabels" -}}
{{ include "mpp.labels" .root }}
app.kubernetes.io/component: {{ .name }}
{{- end -}}

{{- define "mpp.componentSelectorLabels" -}}
{{ include "mpp.selectorLabels" .root }}
app.kubernetes.io/component: {{ .name }}
{{- end -}}

{{- define "mpp.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "mpp.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- /* A service's image (dict "root" $ "name" SERVICE): its own services.<name>.image when
set, else <image.repository>/<name>:<image.tag or appVersion>; a digest wins over a tag. */}}
{{- define "mpp.image" -}}
{{- $root := .root -}}
{{- $svc := index $root.Values.services .name -}}
{{- $own := $svc.image | default dict -}}
{{- $repository := $own.repository | default (printf "%s/%s" $root.Values.image.repository .name) -}}
{{- if $own.digest -}}
{{- printf "%s@%s" $repository $own.digest -}}
{{- else -}}
{{- printf "%s:%s" $repository ($own.tag | default $root.Values.image.tag | default $root.Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{- define "mpp.configMapName" -}}
{{- printf "%s-config" (include "mpp.fullname" .) -}}
{{- end -}}

{{- define "mpp.secretName" -}}
{{- if .Values.secrets.existingSecret -}}
{{- .Values.secrets.existingSecret -}}
{{- else -}}
{{- printf "%s-secrets" (include "mpp.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* The Python module each service runs as (`python -m <module>`): lib/mpp/stack/services.py. */}}
{{- define "mpp.module" -}}
{{- printf "mpp_%s" (. | replace "-" "_") -}}
{{- end -}}

{{/* Settings ---------------------------------------------------------------------------- */}}

{{/*
Where the services keep files: the stack directory (the SQLite warehouse), an emptyDir.
*/}}
{{- define "mpp.dataDir" -}}/var/lib/mpp{{- end -}}
{{- define "mpp.kafkaTlsDir" -}}/etc/mpp/kafka-tls{{- end -}}
{{- define "mpp.bigqueryDir" -}}/etc/mpp/bigquery{{- end -}}
{{- define "mpp.grpcTlsDir" -}}/etc/mpp/grpc-tls{{- end -}}

{{/*
The ConfigMap's data: every non-secret MPP_ setting (names are lib/mpp/config.py's), then
config.extraEnv, which may override any of them (one key each, sorted).
*/}}
{{- define "mpp.configData" -}}
{{- $v := .Values -}}
{{- $d := dict -}}
{{- $_ := set $d "MPP_ENVIRONMENT" $v.config.environment -}}
{{- $_ = set $d "MPP_LOG_LEVEL" $v.config.logLevel -}}
{{- $_ = set $d "MPP_LOG_FORMAT" $v.config.logFormat -}}
{{- $_ = set $d "MPP_STACK__DIR" (include "mpp.dataDir" .) -}}
{{- $_ = set $d "MPP_KAFKA__BOOTSTRAP_SERVERS" $v.kafka.bootstrapServers -}}
{{- $_ = set $d "MPP_KAFKA__SECURITY_PROTOCOL" $v.kafka.securityProtocol -}}
{{- with $v.kafka.saslMechanism }}{{ $_ = set $d "MPP_KAFKA__SASL_MECHANISM" . }}{{ end -}}
{{- with $v.kafka.saslUsername }}{{ $_ = set $d "MPP_KAFKA__SASL_USERNAME" . }}{{ end -}}
{{- if $v.kafka.tls.secretName -}}
{{- $_ = set $d "MPP_KAFKA__SSL_CA_LOCATION" (printf "%s/ca.crt" (include "mpp.kafkaTlsDir" .)) -}}
{{- if $v.kafka.tls.clientCertificate -}}
{{- $_ = set $d "MPP_KAFKA__SSL_CERTIFICATE_LOCATION" (printf "%s/tls.crt" (include "mpp.kafkaTlsDir" .)) -}}
{{- $_ = set $d "MPP_KAFKA__SSL_KEY_LOCATION" (printf "%s/tls.key" (include "mpp.kafkaTlsDir" .)) -}}
{{- end -}}
{{- end -}}
{{- $_ = set $d "MPP_KAFKA__CLIENT_ID" $v.kafka.clientId -}}
{{- $_ = set $d "MPP_KAFKA__GROUP_PREFIX" $v.kafka.groupPrefix -}}
{{- $_ = set $d "MPP_KAFKA__TOPICS__PARTITIONS" $v.kafka.topics.partitions -}}
{{- $_ = set $d "MPP_KAFKA__TOPICS__REPLICATION_FACTOR" $v.kafka.topics.replicationFactor -}}
{{- $_ = set $d "MPP_NEO4J__URI" $v.neo4j.uri -}}
{{- $_ = set $d "MPP_NEO4J__USER" $v.neo4j.user -}}
{{- with $v.neo4j.database }}{{ $_ = set $d "MPP_NEO4J__DATABASE" . }}{{ end -}}
{{- $_ = set $d "MPP_POSTGRES__HOST" $v.postgres.host -}}
{{- $_ = set $d "MPP_POSTGRES__PORT" $v.postgres.port -}}
{{- $_ = set $d "MPP_POSTGRES__USER" $v.postgres.user -}}
{{- $_ = set $d "MPP_POSTGRES__DATABASE" $v.postgres.database -}}
{{- $_ = set $d "MPP_POSTGRES__SSLMODE" $v.postgres.sslmode -}}
{{- $_ = set $d "MPP_REDIS__URL" $v.redis.url -}}
{{- $_ = set $d "MPP_MILVUS__URI" $v.milvus.uri -}}
{{- $_ = set $d "MPP_MILVUS__DB_NAME" $v.milvus.dbName -}}
{{- $_ = set $d "MPP_MILVUS__INDEX_TYPE" $v.milvus.indexType -}}
{{- $_ = set $d "MPP_WAREHOUSE__BACKEND" $v.warehouse.backend -}}
{{- $_ = set $d "MPP_WAREHOUSE__BIGQUERY_PROJECT" $v.warehouse.bigquery.project -}}
{{- $_ = set $d "MPP_WAREHOUSE__BIGQUERY_DATASET" $v.warehouse.bigquery.dataset -}}
{{- $_ = set $d "MPP_WAREHOUSE__BIGQUERY_LOCATION" $v.warehouse.bigquery.location -}}
{{- with $v.warehouse.bigquery.endpoint }}{{ $_ = set $d "MPP_WAREHOUSE__BIGQUERY_ENDPOINT" . }}{{ end -}}
{{- if $v.warehouse.bigquery.credentialsSecret -}}
{{- $_ = set $d "MPP_WAREHOUSE__BIGQUERY_CREDENTIALS_FILE" (printf "%s/credentials.json" (include "mpp.bigqueryDir" .)) -}}
{{- end -}}
{{- $_ = set $d "MPP_EMBEDDER__MODEL" $v.embedder.model -}}
{{- $_ = set $d "MPP_EMBEDDER__PROJECT_TO_DIM" $v.embedder.projectToDim -}}
{{- $_ = set $d "MPP_EMBEDDER__DEVICE" $v.embedder.device -}}
{{- $_ = set $d "MPP_EMBEDDER__TORCH_THREADS" $v.embedder.torchThreads -}}
{{- $_ = set $d "MPP_EMBEDDER__ENCODE_WORKERS" $v.embedder.encodeWorkers -}}
{{- $_ = set $d "MPP_RECOMMENDER__AUTH_ENABLED" $v.recommender.authEnabled -}}
{{- range $name, $value := $v.config.extraEnv }}{{ $_ = set $d $name $value }}{{ end -}}
{{- $lines := list -}}
{{- range $name, $value := $d }}{{ $lines = append $lines (printf "%s: %s" $name ($value | toString | quote)) }}{{ end -}}
{{- join "\n" $lines -}}
{{- end -}}

{{/* The Secret's data, base64: only the values that are set (an empty password is not "none"). */}}
{{- define "mpp.secretData" -}}
{{- $s := .Values.secrets -}}
{{- with $s.neo4jPassword }}
MPP_NEO4J__PASSWORD: {{ . | b64enc | quote }}
{{- end }}
{{- with $s.postgresPassword }}
MPP_POSTGRES__PASSWORD: {{ . | b64enc | quote }}
{{- end }}
{{- with $s.redisPassword }}
MPP_REDIS__PASSWORD: {{ . | b64enc | quote }}
{{- end }}
{{- with $s.milvusToken }}
MPP_MILVUS__TOKEN: {{ . | b64enc | quote }}
{{- end }}
{{- with $s.kafkaSaslPassword }}
MPP_KAFKA__SASL_PASSWORD: {{ . | b64enc | quote }}
{{- end }}
{{- with $s.recommenderApiKeys }}
MPP_RECOMMENDER__API_KEYS: {{ toJson . | b64enc | quote }}
{{- end }}
{{- end -}}

{{/* Pods -------------------------------------------------------------------------------- */}}

{{/* envFrom of every container: the ConfigMap (or its hook copy) and the Secret. Call with (dict "root" $ "configMap" NAME "secret" NAME). */}}
{{- define "mpp.envFrom" -}}
- configMapRef:
    name: {{ .configMap }}
- secretRef:
    name: {{ .secret }}
{{- end -}}

{{/* Volumes every pod has: /tmp and the data folder (the root filesystem is read-only), and the mounted credentials. */}}
{{- define "mpp.volumes" -}}
- name: tmp
  emptyDir: {}
- name: data
  emptyDir: {}
{{- if .Values.kafka.tls.secretName }}
- name: kafka-tls
  secret:
    secretName: {{ .Values.kafka.tls.secretName }}
{{- end }}
{{- if .Values.warehouse.bigquery.credentialsSecret }}
- name: bigquery
  secret:
    secretName: {{ .Values.warehouse.bigquery.credentialsSecret }}
{{- end }}
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "mpp.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: data
  mountPath: {{ include "mpp.dataDir" . }}
{{- if .Values.kafka.tls.secretName }}
- name: kafka-tls
  mountPath: {{ include "mpp.kafkaTlsDir" . }}
  readOnly: true
{{- end }}
{{- if .Values.warehouse.bigquery.credentialsSecret }}
- name: bigquery
  mountPath: {{ include "mpp.bigqueryDir" . }}
  readOnly: true
{{- end }}
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
The replicas a worker may run at most: one consumer per partition, the rest would own nothing
and sit idle (ready, since joining the group is what readiness waits for, but never given a
record). The recommender is not capped: its API scales with its replicas, and its activity
follower only shares the partitions out.
*/}}
{{- define "mpp.checkReplicas" -}}
{{- if ne .name "recommender" -}}
{{- $partitions := int .root.Values.kafka.topics.partitions -}}
{{- $replicas := int .svc.replicas -}}
{{- $what := "replicas" -}}
{{- if and .svc.autoscaling .svc.autoscaling.enabled -}}
{{- $replicas = int .svc.autoscaling.maxReplicas -}}
{{- $what = "autoscaling.maxReplicas" -}}
{{- end -}}
{{- if gt $replicas $partitions -}}
{{- fail (printf "services.%s.%s=%d exceeds kafka.topics.partitions=%d: the extra pods would own no partition and sit idle. Lower it, or raise kafka.topics.partitions to the topics' real partition count." .name $what $replicas $partitions) -}}
{{- end -}}
{{- end -}}
{{- end -}}
