//! How every Kafka client of Quiver reaches the cluster: the bootstrap servers, and TLS and
//! SASL when the cluster asks for them, turned into librdkafka properties.
//!
//! The ingester's consumer and producers and the server's invalidation listener all start from
//! one [`KafkaConnection`], so a secured cluster is configured once. The SASL password is a
//! [`Secret`], so a connection can be logged.

pub mod context;
pub mod invalidations;

use std::path::{Path, PathBuf};

use quiver_core::secret::Secret;
use rdkafka::ClientConfig;

/// SASL mechanisms librdkafka offers without Kerberos.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

impl SaslMechanism {
    /// The value of librdkafka's `sasl.mechanism`.
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// SASL credentials.
#[derive(Debug, Clone)]
pub struct Sasl {
    pub mechanism: SaslMechanism,
    pub username: String,
    pub password: Secret,
}

/// TLS to the brokers. Without a CA file the system's trusted roots verify the brokers; a
/// client certificate and key make it mutual TLS.
#[derive(Debug, Clone, Default)]
pub struct Tls {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// A setting that cannot work, named with the option it came from.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSettingsError {
    #[error("{option} {path}: cannot read it")]
    Unreadable {
        option: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{given} needs {missing} too")]
    Incomplete {
        given: &'static str,
        missing: &'static str,
    },
}

/// Brokers plus security: the start of every Kafka client's configuration.
#[derive(Debug, Clone)]
pub struct KafkaConnection {
    brokers: String,
    tls: Option<Tls>,
    sasl: Option<Sasl>,
}

impl KafkaConnection {
    /// A cluster reached in plain text with no authentication, such as a laptop's.
    pub fn plaintext(brokers: impl Into<String>) -> Self {
        KafkaConnection {
            brokers: brokers.into(),
            tls: None,
            sasl: None,
        }
    }

    /// A cluster reached over TLS, SASL, both or neither. The files are checked now, so a
    /// wrong path is reported at start with the option that gave it, not as a broker error
    /// later.
    pub fn new(
        brokers: impl Into<String>,
        tls: Option<Tls>,
        sasl: Option<Sasl>,
    ) -> Result<Self, KafkaSettingsError> {
        if let Some(tls) = &tls {
            match (&tls.cert_file, &tls.key_file) {
                (Some(_), None) => {
                    return Err(KafkaSettingsError::Incomplete {
                        given: "--kafka-tls-cert-file",
                        missing: "--kafka-tls-key-file",
                    });
                }
                (None, Some(_)) => {
                    return Err(KafkaSettingsError::Incomplete {
                        given: "--kafka-tls-key-file",
                        missing: "--kafka-tls-cert-file",
                    });
                }
                _ => {}
            }
            check_readable("--kafka-tls-ca-file", tls.ca_file.as_deref())?;
            check_readable("--kafka-tls-cert-file", tls.cert_file.as_deref())?;
            check_readable("--kafka-tls-key-file", tls.key_file.as_deref())?;
        }
        Ok(KafkaConnection {
            brokers: brokers.into(),
            tls,
            sasl,
        })
    }

    pub fn brokers(&self) -> &str {
        &self.brokers
    }

    /// librdkafka's `security.protocol` for these settings.
    pub fn security_protocol(&self) -> &'static str {
        match (self.tls.is_some(), self.sasl.is_some()) {
            (false, false) => "plaintext",
            (true, false) => "ssl",
            (false, true) => "sasl_plaintext",
            (true, true) => "sasl_ssl",
        }
    }

    /// A client configuration holding the brokers and security; each client adds its own
    /// properties (group, acks, offsets) to it.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("security.protocol", self.security_protocol());
        if let Some(tls) = &self.tls {
            for (property, path) in [
                ("ssl.ca.location", &tls.ca_file),
                ("ssl.certificate.location", &tls.cert_file),
                ("ssl.key.location", &tls.key_file),
            ] {
                if let Some(path) = path {
                    config.set(property, path.to_string_lossy());
                }
            }
        }
        if let Some(sasl) = &self.sasl {
            config
                .set("sasl.mechanism", sasl.mechanism.as_str())
                .set("sasl.username", &sasl.username)
                .set("sasl.password", sasl.password.expose());
        }
        config
    }
}

fn check_readable(option: &'static str, path: Option<&Path>) -> Result<(), KafkaSettingsError> {
    let Some(path) = path else {
        return Ok(());
    };
    std::fs::File::open(path)
        .map(drop)
        .map_err(|source| KafkaSettingsError::Unreadable {
            option,
            path: path.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use rdkafka::consumer::BaseConsumer;
    use rdkafka::producer::BaseProducer;

    use super::*;

    fn sasl() -> Sasl {
        Sasl {
            mechanism: SaslMechanism::ScramSha512,
            username: "quiver".into(),
            password: "s3cret-password".into(),
        }
    }

    fn pem_file() -> tempfile::NamedTempFile {
        // Only its existence is checked before librdkafka opens it on first connection.
        tempfile::NamedTempFile::new().expect("a temporary file")
    }

    #[test]
    fn a_plaintext_cluster_gets_only_its_brokers() {
        let config = KafkaConnection::plaintext("kafka-0:9092,kafka-1:9092").client_config();
        assert_eq!(
            config.get("bootstrap.servers"),
            Some("kafka-0:9092,kafka-1:9092")
        );
        assert_eq!(config.get("security.protocol"), Some("plaintext"));
        assert_eq!(config.get("sasl.password"), None);
        assert_eq!(config.get("ssl.ca.location"), None);
    }

    #[test]
    fn tls_and_sasl_together_make_sasl_ssl_with_every_file_and_credential() {
        let (ca, cert, key) = (pem_file(), pem_file(), pem_file());
        let tls = Tls {
            ca_file: Some(ca.path().to_owned()),
            cert_file: Some(cert.path().to_owned()),
            key_file: Some(key.path().to_owned()),
        };
        let config = KafkaConnection::new("kafka:9093", Some(tls), Some(sasl()))
            .expect("valid settings")
            .client_config();
        assert_eq!(config.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(config.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(config.get("sasl.username"), Some("quiver"));
        assert_eq!(config.get("sasl.password"), Some("s3cret-password"));
        assert_eq!(
            config.get("ssl.ca.location"),
            Some(ca.path().to_string_lossy().as_ref())
        );
        assert_eq!(
            config.get("ssl.key.location"),
            Some(key.path().to_string_lossy().as_ref())
        );
    }

    #[test]
    fn sasl_alone_is_sasl_plaintext_and_tls_alone_is_ssl() {
        let sasl_only = KafkaConnection::new("kafka:9092", None, Some(sasl())).expect("valid");
        assert_eq!(sasl_only.security_protocol(), "sasl_plaintext");
        let tls_only =
            KafkaConnection::new("kafka:9093", Some(Tls::default()), None).expect("valid");
        assert_eq!(tls_only.security_protocol(), "ssl");
    }

    #[test]
    fn the_password_never_shows_in_debug_output() {
        let connection = KafkaConnection::new("kafka:9092", None, Some(sasl())).expect("valid");
        let printed = format!("{connection:?}");
        assert!(!printed.contains("s3cret-password"), "{printed}");
        assert!(printed.contains("quiver"), "{printed}");
    }

    #[test]
    fn a_missing_ca_file_is_named_with_its_option() {
        let tls = Tls {
            ca_file: Some("/no/such/ca.pem".into()),
            ..Tls::default()
        };
        let error = KafkaConnection::new("kafka:9093", Some(tls), None)
            .expect_err("the file does not exist")
            .to_string();
        assert!(
            error.starts_with("--kafka-tls-ca-file /no/such/ca.pem: cannot read it"),
            "{error}"
        );
    }

    #[test]
    fn a_client_certificate_without_its_key_is_refused() {
        let cert = pem_file();
        let tls = Tls {
            cert_file: Some(cert.path().to_owned()),
            ..Tls::default()
        };
        let error = KafkaConnection::new("kafka:9093", Some(tls), None)
            .expect_err("the key is missing")
            .to_string();
        assert_eq!(
            error,
            "--kafka-tls-cert-file needs --kafka-tls-key-file too"
        );
    }

    #[test]
    fn librdkafka_is_built_with_tls_and_scram() {
        // A build without OpenSSL refuses `sasl_ssl` and SCRAM when the client is created.
        let connection = KafkaConnection::new("127.0.0.1:1", Some(Tls::default()), Some(sasl()))
            .expect("valid settings");
        connection
            .client_config()
            .set("group.id", "quiver-settings-test")
            .create::<BaseConsumer>()
            .expect("librdkafka accepts a SASL_SSL consumer");
        connection
            .client_config()
            .create::<BaseProducer>()
            .expect("librdkafka accepts a SASL_SSL producer");
    }
}
