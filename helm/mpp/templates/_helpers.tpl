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

{{/* The Secret of the ids HMAC key and the API keys: only the pods that use a key get it. */}}
{{- define "mpp.keysSecretName" -}}
{{- .Values.secrets.existingKeysSecret | default (printf "%s-keys" (include "mpp.fullname" .)) -}}
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
{{/* Where a store's TLS Secret is mounted: include "mpp.tlsDir" "postgres". */}}
{{- define "mpp.tlsDir" -}}/etc/mpp/{{ . }}-tls{{- end -}}
{{- define "mpp.bigqueryDir" -}}/etc/mpp/bigquery{{- end -}}
{{- define "mpp.grpcTlsDir" -}}/etc/mpp/grpc-tls{{- end -}}

{{/*
The stores whose TLS Secrets are mounted, each at /etc/mpp/<store>-tls (ca.crt, and tls.crt
and tls.key with clientCertificate): name, Secret. Call with the root context.
*/}}
{{- define "mpp.tlsSecrets" -}}
{{- $v := .Values -}}
{{- $out := dict -}}
{{- range $store := list "kafka" "neo4j" "postgres" "redis" "milvus" -}}
{{- $tls := (index $v $store).tls | default dict -}}
{{- if $tls.secretName }}{{ $_ := set $out $store $tls.secretName }}{{ end -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/*
Production defaults. Without `insecure: true`, Kafka and every store must be reached over
TLS (SASL_SSL or SSL, libpq require/verify-ca/verify-full, bolt+s or neo4j+s, rediss,
https); the TLS settings must also be coherent whatever `insecure` says. Every problem is
named at once, with the value to set.
*/}}
{{- define "mpp.checkTransport" -}}
{{- $v := .Values -}}
{{- $plain := list -}}
{{- if not (has $v.kafka.securityProtocol (list "SSL" "SASL_SSL")) -}}
{{- $plain = append $plain (printf "kafka.securityProtocol=%s: set SSL, or SASL_SSL with kafka.saslMechanism (a private CA: kafka.tls.secretName)" $v.kafka.securityProtocol) -}}
{{- end -}}
{{- if not (has $v.postgres.sslmode (list "require" "verify-ca" "verify-full")) -}}
{{- $plain = append $plain (printf "postgres.sslmode=%s: set verify-full (a private CA: postgres.tls.secretName), verify-ca or require" $v.postgres.sslmode) -}}
{{- end -}}
{{- if not (regexMatch "^(bolt|neo4j)[+]s://" $v.neo4j.uri) -}}
{{- $plain = append $plain (printf "neo4j.uri=%s: use bolt+s:// or neo4j+s:// (+ssc does not verify the server; a private CA: neo4j.tls.secretName)" $v.neo4j.uri) -}}
{{- end -}}
{{- if not (hasPrefix "rediss://" $v.redis.url) -}}
{{- $plain = append $plain (printf "redis.url=%s: use rediss:// (a private CA: redis.tls.secretName)" $v.redis.url) -}}
{{- end -}}
{{- if not (hasPrefix "https://" $v.milvus.uri) -}}
{{- $plain = append $plain (printf "milvus.uri=%s: use https:// (a private CA: milvus.tls.secretName)" $v.milvus.uri) -}}
{{- end -}}
{{- if and $v.tracing.otlpEndpoint $v.tracing.insecure -}}
{{- $plain = append $plain (printf "tracing.insecure=true: spans would reach %s unencrypted; use a collector with TLS (https://, tracing.insecure: false)" $v.tracing.otlpEndpoint) -}}
{{- end -}}
{{- if and $plain (not $v.insecure) -}}
{{- fail (printf "insecure is false and these connections would not be encrypted and verified:\n  - %s\nConfigure TLS for each (docs/security.md, \"Production defaults: TLS, SASL and readiness\"), or set insecure: true only where the network is trusted end to end." (join "\n  - " $plain)) -}}
{{- end -}}
{{- $wrong := list -}}
{{- if and $v.kafka.tls.secretName (not (hasSuffix "SSL" $v.kafka.securityProtocol)) -}}
{{- $wrong = append $wrong (printf "kafka.tls.secretName is set but kafka.securityProtocol=%s does not use TLS: set SSL or SASL_SSL" $v.kafka.securityProtocol) -}}
{{- end -}}
{{- if and (hasPrefix "SASL" $v.kafka.securityProtocol) (not $v.kafka.saslMechanism) -}}
{{- $wrong = append $wrong (printf "kafka.securityProtocol=%s needs kafka.saslMechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER)" $v.kafka.securityProtocol) -}}
{{- end -}}
{{- if and (eq $v.postgres.sslmode "verify-ca") (not $v.postgres.tls.secretName) -}}
{{- $wrong = append $wrong "postgres.sslmode=verify-ca needs the server's CA: postgres.tls.secretName (a Secret with ca.crt), or use verify-full with the system's CAs" -}}
{{- end -}}
{{- if and $v.postgres.tls.secretName (not (has $v.postgres.sslmode (list "require" "verify-ca" "verify-full"))) -}}
{{- $wrong = append $wrong (printf "postgres.tls.secretName is set but postgres.sslmode=%s does not require TLS: set verify-full" $v.postgres.sslmode) -}}
{{- end -}}
{{- if and $v.neo4j.tls.secretName (not (regexMatch "^(bolt|neo4j)[+]s://" $v.neo4j.uri)) -}}
{{- $wrong = append $wrong (printf "neo4j.tls.secretName is set but neo4j.uri=%s is not bolt+s:// or neo4j+s://" $v.neo4j.uri) -}}
{{- end -}}
{{- if and $v.redis.tls.secretName (not (hasPrefix "rediss://" $v.redis.url)) -}}
{{- $wrong = append $wrong (printf "redis.tls.secretName is set but redis.url=%s is not rediss://" $v.redis.url) -}}
{{- end -}}
{{- if and (or $v.milvus.tls.secretName $v.milvus.tls.serverName) (not (hasPrefix "https://" $v.milvus.uri)) -}}
{{- $wrong = append $wrong (printf "milvus.tls is set but milvus.uri=%s is not https://" $v.milvus.uri) -}}
{{- end -}}
{{- if and (hasPrefix "http://" $v.tracing.otlpEndpoint) (not $v.tracing.insecure) -}}
{{- $wrong = append $wrong (printf "tracing.otlpEndpoint=%s is http:// but tracing.insecure is false (the exporter would speak TLS to it): use https://, or tracing.insecure: true for a plaintext collector" $v.tracing.otlpEndpoint) -}}
{{- end -}}
{{- if $wrong -}}
{{- fail (printf "TLS settings that cannot work:\n  - %s" (join "\n  - " $wrong)) -}}
{{- end -}}
{{- end -}}

{{/*
config.environment=production refuses to render without what the services refuse to start
without: the ids HMAC key, at least one API key, authentication on. The chart cannot read
an existing Secret, so secrets.existingKeysSecret stands for both keys.
*/}}
{{- define "mpp.checkProduction" -}}
{{- $v := .Values -}}
{{- $s := $v.secrets -}}
{{- if eq $v.config.environment "production" -}}
{{- $missing := list -}}
{{- if not (or $s.hmacKey $s.existingKeysSecret) -}}
{{- $missing = append $missing "secrets.hmacKey: the ids HMAC key (MPP_IDS__HMAC_KEY), 16 bytes or more of randomness, e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'" -}}
{{- end -}}
{{- if not (or $s.apiKeys $s.existingKeysSecret) -}}
{{- $missing = append $missing "secrets.apiKeys: at least one API key entry (MPP_AUTH__KEYS), as `mpp keys new --name NAME --scopes recommendations:read` prints it" -}}
{{- end -}}
{{- if not $v.auth.enabled -}}
{{- $missing = append $missing "auth.enabled: true (off, anyone who reaches the recommender or the analytics pages could use them)" -}}
{{- end -}}
{{- if and $v.batch.enabled $s.existingKeysSecret (not $s.hmacKey) -}}
{{- $missing = append $missing "secrets.hmacKey for the batch Secret (batch.envSecretName is written from values and cannot copy secrets.existingKeysSecret): the same key as that Secret's MPP_IDS__HMAC_KEY" -}}
{{- end -}}
{{- if $missing -}}
{{- fail (printf "config.environment=production needs:\n  - %s\n(or secrets.existingKeysSecret naming a Secret with MPP_IDS__HMAC_KEY and MPP_AUTH__KEYS)" (join "\n  - " $missing)) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
The ConfigMap's data: every non-secret MPP_ setting (names are lib/mpp/config/'s), then
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
{{- $_ = set $d "MPP_KAFKA__SSL_CA_LOCATION" (printf "%s/ca.crt" (include "mpp.tlsDir" "kafka")) -}}
{{- if $v.kafka.tls.clientCertificate -}}
{{- $_ = set $d "MPP_KAFKA__SSL_CERTIFICATE_LOCATION" (printf "%s/tls.crt" (include "mpp.tlsDir" "kafka")) -}}
{{- $_ = set $d "MPP_KAFKA__SSL_KEY_LOCATION" (printf "%s/tls.key" (include "mpp.tlsDir" "kafka")) -}}
{{- end -}}
{{- end -}}
{{- $_ = set $d "MPP_KAFKA__CLIENT_ID" $v.kafka.clientId -}}
{{- $_ = set $d "MPP_KAFKA__GROUP_PREFIX" $v.kafka.groupPrefix -}}
{{- $_ = set $d "MPP_KAFKA__RETENTION_MS" (int64 $v.kafka.retentionMs) -}}
{{- $_ = set $d "MPP_KAFKA__TOPICS__PARTITIONS" $v.kafka.topics.partitions -}}
{{- $_ = set $d "MPP_KAFKA__TOPICS__REPLICATION_FACTOR" $v.kafka.topics.replicationFactor -}}
{{- $_ = set $d "MPP_NEO4J__URI" $v.neo4j.uri -}}
{{- $_ = set $d "MPP_NEO4J__USER" $v.neo4j.user -}}
{{- with $v.neo4j.database }}{{ $_ = set $d "MPP_NEO4J__DATABASE" . }}{{ end -}}
{{- if $v.neo4j.tls.secretName -}}
{{- $_ = set $d "MPP_NEO4J__CA_FILE" (printf "%s/ca.crt" (include "mpp.tlsDir" "neo4j")) -}}
{{- end -}}
{{- $_ = set $d "MPP_POSTGRES__HOST" $v.postgres.host -}}
{{- $_ = set $d "MPP_POSTGRES__PORT" $v.postgres.port -}}
{{- $_ = set $d "MPP_POSTGRES__USER" $v.postgres.user -}}
{{- $_ = set $d "MPP_POSTGRES__DATABASE" $v.postgres.database -}}
{{- $_ = set $d "MPP_POSTGRES__SSLMODE" $v.postgres.sslmode -}}
{{- if $v.postgres.tls.secretName -}}
{{- $_ = set $d "MPP_POSTGRES__SSLROOTCERT" (printf "%s/ca.crt" (include "mpp.tlsDir" "postgres")) -}}
{{- if $v.postgres.tls.clientCertificate -}}
{{- $_ = set $d "MPP_POSTGRES__SSLCERT" (printf "%s/tls.crt" (include "mpp.tlsDir" "postgres")) -}}
{{- $_ = set $d "MPP_POSTGRES__SSLKEY" (printf "%s/tls.key" (include "mpp.tlsDir" "postgres")) -}}
{{- end -}}
{{- else if eq $v.postgres.sslmode "verify-full" -}}
{{- /* libpq 16+: the system's CAs (libpq's default is ~/.postgresql/root.crt, absent in a pod). */ -}}
{{- $_ = set $d "MPP_POSTGRES__SSLROOTCERT" "system" -}}
{{- end -}}
{{- $_ = set $d "MPP_REDIS__URL" $v.redis.url -}}
{{- if $v.redis.tls.secretName -}}
{{- $_ = set $d "MPP_REDIS__SSL_CA_FILE" (printf "%s/ca.crt" (include "mpp.tlsDir" "redis")) -}}
{{- if $v.redis.tls.clientCertificate -}}
{{- $_ = set $d "MPP_REDIS__SSL_CERT_FILE" (printf "%s/tls.crt" (include "mpp.tlsDir" "redis")) -}}
{{- $_ = set $d "MPP_REDIS__SSL_KEY_FILE" (printf "%s/tls.key" (include "mpp.tlsDir" "redis")) -}}
{{- end -}}
{{- end -}}
{{- $_ = set $d "MPP_MILVUS__URI" $v.milvus.uri -}}
{{- $_ = set $d "MPP_MILVUS__DB_NAME" $v.milvus.dbName -}}
{{- $_ = set $d "MPP_MILVUS__INDEX_TYPE" $v.milvus.indexType -}}
{{- if $v.milvus.tls.secretName -}}
{{- $_ = set $d "MPP_MILVUS__TLS_CA_FILE" (printf "%s/ca.crt" (include "mpp.tlsDir" "milvus")) -}}
{{- if $v.milvus.tls.clientCertificate -}}
{{- $_ = set $d "MPP_MILVUS__TLS_CERT_FILE" (printf "%s/tls.crt" (include "mpp.tlsDir" "milvus")) -}}
{{- $_ = set $d "MPP_MILVUS__TLS_KEY_FILE" (printf "%s/tls.key" (include "mpp.tlsDir" "milvus")) -}}
{{- end -}}
{{- end -}}
{{- with $v.milvus.tls.serverName }}{{ $_ = set $d "MPP_MILVUS__TLS_SERVER_NAME" . }}{{ end -}}
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
{{- $_ = set $d "MPP_AUTH__ENABLED" $v.auth.enabled -}}
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
{{- end -}}

{{/* The keys from values, base64. With (dict "root" $ "api" false): the ids keys only (the
batch Secret, the migration hook's copy). */}}
{{- define "mpp.keysData" -}}
{{- $s := .root.Values.secrets -}}
{{- with $s.hmacKey }}
MPP_IDS__HMAC_KEY: {{ . | b64enc | quote }}
{{- end }}
{{- with $s.previousHmacKeys }}
MPP_IDS__PREVIOUS_HMAC_KEYS: {{ toJson . | b64enc | quote }}
{{- end }}
{{- if .api }}
{{- with $s.apiKeys }}
MPP_AUTH__KEYS: {{ toJson . | b64enc | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
The keys a pod takes from the keys Secret, as env entries (optional: a key the Secret lacks
leaves the setting's default, which production refuses). The ids HMAC key goes to every
pod that loads the settings: they refuse environment=production without it (a check of
Settings as a whole, lib/mpp/config/), and the writers, ingest and the recommender use it.
The API keys go only to the doors that check them: the recommender and analytics. Call with
(dict "root" $ "name" SERVICE), and "secret" NAME for another Secret than the keys Secret.
*/}}
{{- define "mpp.keysEnv" -}}
{{- $keys := list "MPP_IDS__HMAC_KEY" "MPP_IDS__PREVIOUS_HMAC_KEYS" -}}
{{- if has .name (list "recommender" "analytics") -}}
{{- $keys = append $keys "MPP_AUTH__KEYS" -}}
{{- end -}}
{{- $secret := .secret | default (include "mpp.keysSecretName" .root) -}}
{{- range $keys }}
- name: {{ . }}
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ . }}
      optional: true
{{- end }}
{{- end -}}

{{/*
The OpenTelemetry variables of a service's container when tracing.otlpEndpoint is set
(lib/mpp/tracing.py reads only these: docs/tracing.md); nothing when it is empty. The service
name is each service's own (its default).
*/}}
{{- define "mpp.tracingEnv" -}}
{{- $t := .Values.tracing -}}
{{- if $t.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ $t.otlpEndpoint | quote }}
- name: OTEL_EXPORTER_OTLP_INSECURE
  value: {{ $t.insecure | toString | quote }}
- name: OTEL_TRACES_SAMPLER
  value: {{ $t.sampler | quote }}
{{- if ne (toString $t.samplerArg) "" }}
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ $t.samplerArg | toString | quote }}
{{- end }}
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
{{- range $store, $secret := include "mpp.tlsSecrets" . | fromJson }}
- name: {{ $store }}-tls
  secret:
    secretName: {{ $secret }}
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
{{- range $store, $secret := include "mpp.tlsSecrets" . | fromJson }}
- name: {{ $store }}-tls
  mountPath: {{ include "mpp.tlsDir" $store }}
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
