//! How the ingester and the server reach Kafka: brokers, and TLS and SASL for a secured cluster.

use std::path::PathBuf;

use clap::Args;
use quiver_core::secret::Secret;
use quiver_kafka::{KafkaConnection, Sasl, SaslMechanism, Tls};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum SaslMechanismArg {
    Plain,
    ScramSha256,
    ScramSha512,
}

/// The Kafka cluster. Secrets come from the environment in a deployment (the Helm chart maps
/// them from Kubernetes Secrets), so they stay out of process listings.
#[derive(Debug, Args)]
pub(crate) struct KafkaArgs {
    /// Kafka bootstrap servers, comma-separated host:port.
    #[arg(long, env = "QUIVER_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Connect to the brokers over TLS, verified with the system's trusted roots unless
    /// --kafka-tls-ca-file is given.
    #[arg(long, env = "QUIVER_KAFKA_TLS")]
    kafka_tls: bool,
    /// PEM file of the CA that signed the brokers' certificates.
    #[arg(long, env = "QUIVER_KAFKA_TLS_CA_FILE", requires = "kafka_tls")]
    kafka_tls_ca_file: Option<PathBuf>,
    /// PEM client certificate, for brokers that require mutual TLS (with --kafka-tls-key-file).
    #[arg(long, env = "QUIVER_KAFKA_TLS_CERT_FILE", requires = "kafka_tls")]
    kafka_tls_cert_file: Option<PathBuf>,
    /// PEM private key of --kafka-tls-cert-file.
    #[arg(long, env = "QUIVER_KAFKA_TLS_KEY_FILE", requires = "kafka_tls")]
    kafka_tls_key_file: Option<PathBuf>,
    /// Authenticate with SASL using this mechanism (with --kafka-sasl-username and
    /// QUIVER_KAFKA_SASL_PASSWORD).
    #[arg(
        long,
        env = "QUIVER_KAFKA_SASL_MECHANISM",
        value_enum,
        requires_all = ["kafka_sasl_username", "kafka_sasl_password"]
    )]
    kafka_sasl_mechanism: Option<SaslMechanismArg>,
    /// The SASL user name.
    #[arg(
        long,
        env = "QUIVER_KAFKA_SASL_USERNAME",
        requires = "kafka_sasl_mechanism"
    )]
    kafka_sasl_username: Option<String>,
    /// The SASL password; prefer the environment variable to the flag.
    #[arg(
        long,
        env = "QUIVER_KAFKA_SASL_PASSWORD",
        hide_env_values = true,
        requires = "kafka_sasl_mechanism"
    )]
    kafka_sasl_password: Option<Secret>,
}

impl KafkaArgs {
    pub(crate) fn connection(&self) -> anyhow::Result<KafkaConnection> {
        let tls = self.kafka_tls.then(|| Tls {
            ca_file: self.kafka_tls_ca_file.clone(),
            cert_file: self.kafka_tls_cert_file.clone(),
            key_file: self.kafka_tls_key_file.clone(),
        });
        let sasl = match (
            self.kafka_sasl_mechanism,
            &self.kafka_sasl_username,
            &self.kafka_sasl_password,
        ) {
            (Some(mechanism), Some(username), Some(password)) => Some(Sasl {
                mechanism: match mechanism {
                    SaslMechanismArg::Plain => SaslMechanism::Plain,
                    SaslMechanismArg::ScramSha256 => SaslMechanism::ScramSha256,
                    SaslMechanismArg::ScramSha512 => SaslMechanism::ScramSha512,
                },
                username: username.clone(),
                password: password.clone(),
            }),
            // clap's `requires` lets no partial set through.
            _ => None,
        };
        Ok(KafkaConnection::new(self.brokers.clone(), tls, sasl)?)
    }
}
