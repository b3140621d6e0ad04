//! Reading Avro schemas from `.avsc` files, with errors that name the file.

use std::path::{Path, PathBuf};

use apache_avro::Schema;
use thiserror::Error;

/// An `.avsc` file that could not be used.
#[derive(Debug, Error)]
pub enum SchemaFileError {
    #[error("cannot read Avro schema file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a valid Avro schema: {source}", path.display())]
    Invalid {
        path: PathBuf,
        source: Box<apache_avro::Error>,
    },
}

/// Parses one `.avsc` file.
pub fn read_schema_file(path: &Path) -> Result<Schema, SchemaFileError> {
    read_schema_with_text(path).map(|(schema, _)| schema)
}

/// Parses one `.avsc` file and also returns its text, which the registry keeps so that running
/// processes need no schema files.
pub fn read_schema_with_text(path: &Path) -> Result<(Schema, String), SchemaFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| SchemaFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    let schema = Schema::parse_str(&text).map_err(|source| SchemaFileError::Invalid {
        path: path.to_owned(),
        source: Box::new(source),
    })?;
    Ok((schema, text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::schema::RecordSchema;

    fn bundled(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../schemas")
            .join(name)
    }

    fn record_fields(schema: &Schema) -> Vec<&str> {
        let Schema::Record(RecordSchema { fields, .. }) = schema else {
            panic!("expected a record schema, got {schema:?}");
        };
        fields.iter().map(|field| field.name.as_str()).collect()
    }

    #[test]
    fn bundled_event_schemas_parse_and_carry_keys_and_event_time() {
        let matches = read_schema_file(&bundled("match_event.avsc")).unwrap();
        let fields = record_fields(&matches);
        for expected in ["ts", "user_id", "candidate_id", "action", "device"] {
            assert!(
                fields.contains(&expected),
                "match_event lacks {expected}: {fields:?}"
            );
        }

        let profile = read_schema_file(&bundled("user_profile_updated.avsc")).unwrap();
        let fields = record_fields(&profile);
        for expected in ["user_id", "updated_at", "country", "bio_embedding"] {
            assert!(
                fields.contains(&expected),
                "user_profile_updated lacks {expected}: {fields:?}"
            );
        }

        let upsert = read_schema_file(&bundled("feature_upsert.avsc")).unwrap();
        assert_eq!(
            record_fields(&upsert),
            ["feature_view", "keys", "values", "event_time"]
        );
    }

    #[test]
    fn errors_name_the_file() {
        let missing = bundled("no_such_schema.avsc");
        let error = read_schema_file(&missing).unwrap_err();
        assert!(error.to_string().contains("no_such_schema.avsc"), "{error}");

        let dir = std::env::temp_dir().join(format!("quiver-avro-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let broken = dir.join("broken.avsc");
        std::fs::write(
            &broken,
            r#"{"type": "record", "name": "Broken", "fields": [{"name": "x", "type": "integer"}]}"#,
        )
        .unwrap();
        let error = read_schema_file(&broken).unwrap_err();
        assert!(matches!(error, SchemaFileError::Invalid { .. }), "{error}");
        assert!(error.to_string().contains("broken.avsc"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
