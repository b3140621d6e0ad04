//! Schemas from a Confluent-compatible Schema Registry: writer schemas by the id in each
//! record's header, and the latest schema of a subject as a view's reader schema.
//!
//! Speaks the registry's REST API over plain HTTP (`GET /schemas/ids/{id}`,
//! `GET /subjects/{subject}/versions/latest`). Only Avro schemas without references are read.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use apache_avro::Schema;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// The longest one registry request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest wait between retries while the registry cannot be reached.
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum SchemaRegistryError {
    #[error("schema registry URL `{url}`: {reason}")]
    BadUrl { url: String, reason: String },
    /// Worth retrying: the registry did not answer, or answered with a server error.
    #[error("schema registry at {url} is unavailable: {reason}")]
    Unavailable { url: String, reason: String },
    #[error("schema registry {url}: {reason}")]
    Refused { url: String, reason: String },
}

/// A client of one Schema Registry.
#[derive(Clone)]
pub struct SchemaRegistry {
    base: String,
    client: Arc<Client<HttpConnector, Empty<Bytes>>>,
}

impl std::fmt::Debug for SchemaRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaRegistry")
            .field("base", &self.base)
            .finish()
    }
}

impl SchemaRegistry {
    /// A client of the registry at `url`, such as `http://schema-registry:8081`.
    pub fn new(url: &str) -> Result<Self, SchemaRegistryError> {
        let base = url.trim_end_matches('/').to_owned();
        let uri: hyper::Uri = base.parse().map_err(|error| SchemaRegistryError::BadUrl {
            url: url.to_owned(),
            reason: format!("{error}"),
        })?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            return Err(SchemaRegistryError::BadUrl {
                url: url.to_owned(),
                reason: "give an http://host:port address; https is not supported, so reach a \
                         TLS registry through a local proxy"
                    .into(),
            });
        }
        Ok(SchemaRegistry {
            base,
            client: Arc::new(Client::builder(TokioExecutor::new()).build_http()),
        })
    }

    /// The schema registered under `id`, or `None` if the registry has no such id.
    pub async fn schema_by_id(&self, id: u32) -> Result<Option<Schema>, SchemaRegistryError> {
        let Some(body) = self.get(&format!("/schemas/ids/{id}")).await? else {
            return Ok(None);
        };
        self.avro(&body, &format!("schema id {id}")).map(Some)
    }

    /// The latest schema registered under `subject`.
    pub async fn latest_schema(&self, subject: &str) -> Result<Schema, SchemaRegistryError> {
        let path = format!("/subjects/{subject}/versions/latest");
        let body = self
            .get(&path)
            .await?
            .ok_or_else(|| SchemaRegistryError::Refused {
                url: format!("{}{path}", self.base),
                reason: format!("subject `{subject}` is not registered"),
            })?;
        self.avro(&body, &format!("subject `{subject}`"))
    }

    /// The JSON body of a GET, or `None` on 404.
    async fn get(&self, path: &str) -> Result<Option<serde_json::Value>, SchemaRegistryError> {
        let url = format!("{}{path}", self.base);
        let unavailable = |reason: String| SchemaRegistryError::Unavailable {
            url: url.clone(),
            reason,
        };
        let uri: hyper::Uri = url.parse().map_err(|error| SchemaRegistryError::BadUrl {
            url: url.clone(),
            reason: format!("{error}"),
        })?;
        let request = hyper::Request::get(uri)
            .header(
                "accept",
                "application/vnd.schemaregistry.v1+json, application/json",
            )
            .body(Empty::new())
            .map_err(|error| unavailable(error.to_string()))?;
        let exchange = async {
            let response = self.client.request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((status, body))
        };
        let (status, body) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| unavailable(format!("no answer within {REQUEST_TIMEOUT:?}")))?
            .map_err(|error| unavailable(error.to_string()))?;
        if status == hyper::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let text = String::from_utf8_lossy(&body);
        if status.is_server_error() {
            return Err(unavailable(format!("HTTP {status}: {text}")));
        }
        if !status.is_success() {
            return Err(SchemaRegistryError::Refused {
                url,
                reason: format!("HTTP {status}: {text}"),
            });
        }
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|error| SchemaRegistryError::Refused {
                url,
                reason: format!("the answer is not JSON ({error}): {text}"),
            })
    }

    fn avro(&self, body: &serde_json::Value, what: &str) -> Result<Schema, SchemaRegistryError> {
        let refused = |reason: String| SchemaRegistryError::Refused {
            url: self.base.clone(),
            reason: format!("{what}: {reason}"),
        };
        if let Some(kind) = body.get("schemaType").and_then(|kind| kind.as_str())
            && kind != "AVRO"
        {
            return Err(refused(format!("is a {kind} schema, not Avro")));
        }
        let text = body
            .get("schema")
            .and_then(|schema| schema.as_str())
            .ok_or_else(|| refused(format!("the answer has no `schema` string: {body}")))?;
        Schema::parse_str(text)
            .map_err(|error| refused(format!("not a valid Avro schema: {error}")))
    }
}

/// Writer schemas by id: those configured locally, then those fetched from the registry, if
/// one is configured. Ids the registry does not know are remembered as unknown.
#[derive(Debug)]
pub(crate) struct WriterSchemas {
    known: RwLock<HashMap<u32, Option<Arc<Schema>>>>,
    registry: Option<SchemaRegistry>,
}

impl WriterSchemas {
    pub(crate) fn new(local: &HashMap<u32, Schema>, registry: Option<SchemaRegistry>) -> Self {
        let known = local
            .iter()
            .map(|(id, schema)| (*id, Some(Arc::new(schema.clone()))))
            .collect();
        WriterSchemas {
            known: RwLock::new(known),
            registry,
        }
    }

    /// The schema of `id`, if known; `None` for an id neither configured nor registered.
    pub(crate) fn get(&self, id: u32) -> Option<Arc<Schema>> {
        self.known
            .read()
            .expect("not poisoned")
            .get(&id)
            .cloned()
            .flatten()
    }

    /// Fetches the schemas of `ids` not seen before from the registry, retrying with backoff
    /// while it cannot be reached: a record is only called unknown once the registry said so.
    pub(crate) async fn fetch_missing(
        &self,
        ids: impl IntoIterator<Item = u32>,
    ) -> Result<(), SchemaRegistryError> {
        let Some(registry) = &self.registry else {
            return Ok(());
        };
        let mut missing: Vec<u32> = {
            let known = self.known.read().expect("not poisoned");
            ids.into_iter()
                .filter(|id| !known.contains_key(id))
                .collect()
        };
        missing.sort_unstable();
        missing.dedup();
        for id in missing {
            let mut backoff = Duration::from_millis(100);
            let schema = loop {
                match registry.schema_by_id(id).await {
                    Ok(schema) => break schema,
                    Err(error @ SchemaRegistryError::Unavailable { .. }) => {
                        tracing::warn!(%error, schema_id = id, retry_in_ms = backoff.as_millis() as u64, "schema registry unavailable; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_RETRY_BACKOFF);
                    }
                    Err(error) => return Err(error),
                }
            };
            tracing::info!(
                schema_id = id,
                found = schema.is_some(),
                "writer schema fetched"
            );
            self.known
                .write()
                .expect("not poisoned")
                .insert(id, schema.map(Arc::new));
        }
        Ok(())
    }
}
