//! A secret string, such as a database or Kafka password, that never shows in `Debug` output,
//! so the settings holding it can be logged whole.

use std::convert::Infallible;
use std::fmt;
use std::str::FromStr;

/// A password or other secret. Read it with [`Secret::expose`] where it is handed to a client;
/// everywhere else it prints as `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(secret: impl Into<String>) -> Self {
        Secret(secret.into())
    }

    /// The secret itself, for the client that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl FromStr for Secret {
    type Err = Infallible;

    fn from_str(secret: &str) -> Result<Self, Infallible> {
        Ok(Secret::new(secret))
    }
}

impl From<&str> for Secret {
    fn from(secret: &str) -> Self {
        Secret::new(secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_the_secret_and_expose_gives_it() {
        #[derive(Debug)]
        #[allow(dead_code, reason = "only printed")]
        struct Login {
            user: String,
            password: Secret,
        }
        let login = Login {
            user: "quiver".into(),
            password: "s3cret".into(),
        };
        let printed = format!("{login:?}");
        assert_eq!(printed, r#"Login { user: "quiver", password: <redacted> }"#);
        assert_eq!(login.password.expose(), "s3cret");
    }
}
