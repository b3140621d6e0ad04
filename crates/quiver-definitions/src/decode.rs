//! Turns YAML trees into checked definitions, collecting every error with its position.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use apache_avro::Schema;
use quiver_avro::mapping::{self, FieldPathError};
use quiver_core::aggregate::{check_resolution, default_resolution};
use quiver_core::definition::{
    Aggregate, AggregateFunction, DEFAULT_DEDUP, Definitions, Derivation, Entity, Feature,
    FeatureService, FeatureView, KEY_TYPES, KeyField, MAX_LAST_K, MAX_WINDOW, SchemaRef, Seconds,
    ServiceFeature, Source,
};
use quiver_core::filter::Filter;
use quiver_core::name::Name;
use quiver_core::value::{ScalarType, Value, ValueType};

use crate::yaml::{self, Kind, Node};
use crate::{DefinitionError, DefinitionErrors, Position};

mod filter;

/// Reads and checks every definition file in `dir`.
pub fn load_dir(dir: &Path) -> Result<Definitions, DefinitionErrors> {
    let entries = std::fs::read_dir(dir).map_err(|error| {
        DefinitionErrors::single(dir, format!("cannot read the definitions folder: {error}"))
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.is_file()
                && path
                    .extension()
                    .is_some_and(|extension| extension == "yaml" || extension == "yml")
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(DefinitionErrors::single(
            dir,
            "no *.yaml or *.yml definition files in this folder".to_owned(),
        ));
    }

    let mut loader = Loader::default();
    let mut documents = Vec::new();
    for file in files {
        match std::fs::read_to_string(&file) {
            Err(error) => loader.error_in(
                &file,
                Position { line: 1, column: 1 },
                format!("cannot read: {error}"),
            ),
            Ok(text) => match yaml::parse(&text) {
                Ok(root) => documents.push((file, root)),
                Err((at, message)) => loader.error_in(&file, at, message),
            },
        }
    }

    // Entities first, then views (which name entities), then services (which name views), so
    // that references resolve whichever file declares them.
    let mut sections: Vec<(PathBuf, BTreeMap<&str, &Node>)> = Vec::new();
    for (file, root) in &documents {
        loader.file = file.clone();
        if let Some(fields) = loader.fields(
            root,
            "a definition file",
            &["entities", "feature_views", "feature_services"],
        ) {
            sections.push((
                file.clone(),
                fields
                    .entries
                    .iter()
                    .map(|(k, _, v)| (k.as_str(), v))
                    .collect(),
            ));
        }
    }
    for (file, section) in &sections {
        loader.file = file.clone();
        for node in loader.items(section.get("entities").copied(), "entities") {
            loader.entity(node);
        }
    }
    for (file, section) in &sections {
        loader.file = file.clone();
        for node in loader.items(section.get("feature_views").copied(), "feature_views") {
            loader.feature_view(node);
        }
    }
    for (file, section) in &sections {
        loader.file = file.clone();
        for node in loader.items(section.get("feature_services").copied(), "feature_services") {
            loader.feature_service(node);
        }
    }

    if loader.errors.is_empty() {
        Ok(loader.definitions)
    } else {
        loader
            .errors
            .sort_by(|a, b| (&a.file, a.at).cmp(&(&b.file, b.at)));
        Err(DefinitionErrors(loader.errors))
    }
}

#[derive(Default)]
struct Loader {
    file: PathBuf,
    errors: Vec<DefinitionError>,
    definitions: Definitions,
    schemas: HashMap<PathBuf, Option<(Schema, String)>>,
}

/// The entries of a mapping whose keys were all allowed.
struct Fields<'n> {
    at: Position,
    entries: &'n [(String, Position, Node)],
}

impl<'n> Fields<'n> {
    fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(name, _, _)| name == key)
            .map(|(_, _, node)| node)
    }
}

impl Loader {
    fn declared_twice(&mut self, at: Position, kind: &str, name: &Name) {
        self.error(
            at,
            format!("{kind} `{name}` is declared twice; rename or remove one"),
        );
    }

    fn error(&mut self, at: Position, message: impl Into<String>) {
        let file = self.file.clone();
        self.error_in(&file, at, message.into());
    }

    fn error_in(&mut self, file: &Path, at: Position, message: String) {
        self.errors.push(DefinitionError {
            file: file.to_owned(),
            at,
            message,
        });
    }

    /// A mapping whose keys are all in `allowed`; each unknown key is an error of its own.
    fn fields<'n>(&mut self, node: &'n Node, what: &str, allowed: &[&str]) -> Option<Fields<'n>> {
        let Kind::Map(entries) = &node.kind else {
            self.error(
                node.at,
                format!("{what} must be a mapping, not {}", node.kind.describe()),
            );
            return None;
        };
        for (key, at, _) in entries {
            if !allowed.contains(&key.as_str()) {
                self.error(
                    *at,
                    format!(
                        "unknown key `{key}` in {what}; expected one of: {}",
                        allowed.join(", ")
                    ),
                );
            }
        }
        Some(Fields {
            at: node.at,
            entries,
        })
    }

    fn required<'n>(&mut self, fields: &Fields<'n>, key: &str, what: &str) -> Option<&'n Node> {
        let node = fields.get(key);
        if node.is_none() {
            self.error(fields.at, format!("{what} needs `{key}`"));
        }
        node
    }

    fn items<'n>(&mut self, node: Option<&'n Node>, what: &str) -> &'n [Node] {
        match node.map(|node| (node, &node.kind)) {
            None | Some((_, Kind::Null)) => &[],
            Some((_, Kind::Seq(items))) => items,
            Some((node, kind)) => {
                self.error(
                    node.at,
                    format!("`{what}` must be a list, not {}", kind.describe()),
                );
                &[]
            }
        }
    }

    fn string(&mut self, node: &Node, what: &str) -> Option<String> {
        match &node.kind {
            Kind::Str(text) => Some(text.clone()),
            other => {
                self.error(
                    node.at,
                    format!("{what} must be a string, not {}", other.describe()),
                );
                None
            }
        }
    }

    fn optional_string(&mut self, node: Option<&Node>, what: &str) -> String {
        node.and_then(|node| self.string(node, what))
            .unwrap_or_default()
    }

    fn name(&mut self, node: &Node, what: &str) -> Option<Name> {
        let text = self.string(node, what)?;
        match text.parse() {
            Ok(name) => Some(name),
            Err(error) => {
                self.error(node.at, format!("{what}: {error}"));
                None
            }
        }
    }

    fn duration(&mut self, node: &Node, what: &str) -> Option<Seconds> {
        let text = self.string(node, what)?;
        match text.parse() {
            Ok(duration) => Some(duration),
            Err(error) => {
                self.error(node.at, format!("{what}: {error}"));
                None
            }
        }
    }

    fn entity(&mut self, node: &Node) {
        let Some(fields) = self.fields(node, "an entity", &["name", "description", "keys"]) else {
            return;
        };
        let name = self
            .required(&fields, "name", "an entity")
            .and_then(|n| self.name(n, "entity name"));
        let what = name
            .as_ref()
            .map_or_else(|| "an entity".to_owned(), |n| format!("entity `{n}`"));
        let description = self.optional_string(fields.get("description"), "description");
        let mut keys = Vec::new();
        let keys_node = self.required(&fields, "keys", &what);
        let key_items = self.items(keys_node, "keys");
        if key_items.is_empty() && keys_node.is_some() {
            self.error(fields.at, format!("{what} needs at least one key field"));
        }
        for key in key_items {
            let Some(key_fields) = self.fields(key, &format!("a key of {what}"), &["name", "type"])
            else {
                continue;
            };
            let key_name = self
                .required(&key_fields, "name", "a key field")
                .and_then(|n| self.name(n, "key name"));
            let key_type = self.required(&key_fields, "type", "a key field").and_then(|type_node| {
                let text = self.string(type_node, "key type")?;
                match text.parse::<ScalarType>() {
                    Ok(scalar) if KEY_TYPES.contains(&scalar) => Some(scalar),
                    _ => {
                        self.error(
                            type_node.at,
                            format!("key type `{text}` is not allowed; use int32, int64, string or bytes"),
                        );
                        None
                    }
                }
            });
            if let (Some(name), Some(key_type)) = (key_name, key_type) {
                keys.push(KeyField { name, key_type });
            }
        }
        let Some(name) = name else { return };
        if self
            .definitions
            .entities
            .iter()
            .any(|entity| entity.name == name)
        {
            self.declared_twice(node.at, "entity", &name);
            return;
        }
        self.definitions.entities.push(Entity {
            name,
            description,
            keys,
        });
    }

    fn schema(&mut self, at: Position, relative: &str) -> Option<(Schema, String)> {
        let path = self.file.parent().unwrap_or(Path::new(".")).join(relative);
        if let Some(cached) = self.schemas.get(&path) {
            return cached.clone();
        }
        let schema = match quiver_avro::schema_file::read_schema_with_text(&path) {
            Ok(schema) => Some(schema),
            Err(error) => {
                self.error(
                    at,
                    format!("{error}; the path is relative to this definition file"),
                );
                None
            }
        };
        self.schemas.insert(path, schema.clone());
        schema
    }

    /// Resolves an Avro field path, reporting a bad one at `at`.
    fn avro_field<'s>(
        &mut self,
        schema: &'s Schema,
        path: &str,
        at: Position,
        what: &str,
    ) -> Option<mapping::ResolvedField<'s>> {
        match mapping::resolve_path(schema, path) {
            Ok(field) => Some(field),
            Err(
                error @ (FieldPathError::NotFound { .. }
                | FieldPathError::NotARecord { .. }
                | FieldPathError::Empty),
            ) => {
                self.error(at, format!("{what} `{path}`: {error}"));
                None
            }
        }
    }

    fn feature_view(&mut self, node: &Node) {
        let Some(fields) = self.fields(
            node,
            "a feature view",
            &[
                "name",
                "entity",
                "source",
                "ttl",
                "allowed_lateness",
                "dedup",
                "description",
                "owner",
                "tags",
                "features",
            ],
        ) else {
            return;
        };
        let name = self
            .required(&fields, "name", "a feature view")
            .and_then(|n| self.name(n, "feature view name"));
        let what = name.as_ref().map_or_else(
            || "a feature view".to_owned(),
            |n| format!("feature view `{n}`"),
        );
        let entity = self.required(&fields, "entity", &what).and_then(|entity_node| {
            let entity_name = self.name(entity_node, "entity")?;
            match self.definitions.entities.iter().find(|e| e.name == entity_name) {
                Some(entity) => Some(entity.clone()),
                None => {
                    let known: Vec<String> = self.definitions.entities.iter().map(|e| e.name.to_string()).collect();
                    self.error(
                        entity_node.at,
                        format!("{what} names entity `{entity_name}`, which is not declared; declared entities: {}", display_list(&known)),
                    );
                    None
                }
            }
        });
        let ttl = fields.get("ttl").and_then(|ttl| self.duration(ttl, "ttl"));
        let allowed_lateness = fields
            .get("allowed_lateness")
            .and_then(|lateness| self.duration(lateness, "allowed_lateness"));
        let dedup_node = fields.get("dedup");
        let dedup = dedup_node.and_then(|dedup| self.duration(dedup, "dedup"));
        let description = self.optional_string(fields.get("description"), "description");
        let owner = self.optional_string(fields.get("owner"), "owner");
        let mut tags = BTreeMap::new();
        if let Some(tags_node) = fields.get("tags") {
            match &tags_node.kind {
                Kind::Map(entries) => {
                    for (key, _, value) in entries {
                        if let Some(value) = self.string(value, &format!("tag `{key}`")) {
                            tags.insert(key.clone(), value);
                        }
                    }
                }
                other => self.error(
                    tags_node.at,
                    format!(
                        "tags must be a mapping of strings, not {}",
                        other.describe()
                    ),
                ),
            }
        }

        let source_and_schema = self
            .required(&fields, "source", &what)
            .and_then(|source| self.source(source, &what, entity.as_ref()));
        let schema = source_and_schema
            .as_ref()
            .and_then(|(_, schema)| schema.clone());
        let mut features: Vec<Feature> = Vec::new();
        let features_node = self.required(&fields, "features", &what);
        let feature_nodes = self.items(features_node, "features");
        for feature_node in feature_nodes {
            if let Some(feature) = self.feature(feature_node, &what, schema.as_ref()) {
                if let Some(entity) = &entity
                    && entity.keys.iter().any(|key| key.name == feature.name)
                {
                    self.error(
                        feature_node.at,
                        format!(
                            "feature `{}` has the name of a key of entity `{}`; rename the feature",
                            feature.name, entity.name
                        ),
                    );
                } else if features.iter().any(|f| f.name == feature.name) {
                    self.error(
                        feature_node.at,
                        format!("feature `{}` appears twice in {what}", feature.name),
                    );
                } else {
                    features.push(feature);
                }
            }
        }
        let (Some(name), Some(entity), Some((source, _))) = (name, entity, source_and_schema)
        else {
            return;
        };
        let dedup = match (&source.event_id, dedup_node) {
            (Some(_), _) => Some(dedup.unwrap_or(DEFAULT_DEDUP)),
            (None, Some(node)) => {
                self.error(
                    node.at,
                    format!(
                        "{what} declares `dedup` but its source has no `event_id`; name the \
                         field that identifies an event, or drop `dedup`"
                    ),
                );
                return;
            }
            (None, None) => None,
        };
        if self
            .definitions
            .feature_views
            .iter()
            .any(|view| view.name == name)
        {
            self.declared_twice(node.at, "feature view", &name);
            return;
        }
        self.definitions.feature_views.push(FeatureView {
            name,
            entity: entity.name,
            source,
            ttl,
            allowed_lateness,
            dedup,
            description,
            owner,
            tags,
            features,
        });
    }

    fn source(
        &mut self,
        node: &Node,
        what: &str,
        entity: Option<&Entity>,
    ) -> Option<(Source, Option<Schema>)> {
        let what = format!("the source of {what}");
        let fields = self.fields(
            node,
            &what,
            &[
                "topic",
                "schema",
                "subject",
                "key_fields",
                "event_time",
                "event_id",
            ],
        )?;
        let topic = self
            .required(&fields, "topic", &what)
            .and_then(|t| self.string(t, "topic"));
        let (schema_ref, schema) = match (fields.get("schema"), fields.get("subject")) {
            (Some(file), None) => {
                let relative = self.string(file, "schema")?;
                let schema = self.schema(file.at, &relative)?;
                let (schema, avsc) = schema;
                (
                    SchemaRef::File {
                        path: relative,
                        avsc,
                    },
                    Some(schema),
                )
            }
            // A registry subject is resolved by the ingester; its fields cannot be checked here.
            (None, Some(subject)) => (SchemaRef::Subject(self.string(subject, "subject")?), None),
            _ => {
                self.error(fields.at, format!("{what} needs exactly one of `schema` (an .avsc file) or `subject` (a Schema Registry subject)"));
                return None;
            }
        };
        let key_fields_node = self.required(&fields, "key_fields", &what);
        let key_nodes = self.items(key_fields_node, "key_fields");
        let mut key_fields = Vec::new();
        for key_node in key_nodes {
            if let Some(path) = self.string(key_node, "key field") {
                key_fields.push((key_node.at, path));
            }
        }
        if let Some(entity) = entity
            && key_fields.len() != entity.keys.len()
        {
            let key_names: Vec<String> =
                entity.keys.iter().map(|key| key.name.to_string()).collect();
            self.error(
                fields.get("key_fields").map_or(fields.at, |n| n.at),
                format!(
                    "{what} gives {} key field(s), but entity `{}` has {} key(s) ({}); give one Avro field per key, in that order",
                    key_fields.len(), entity.name, entity.keys.len(), key_names.join(", ")
                ),
            );
        }
        let event_time_node = self.required(&fields, "event_time", &what);
        let event_time = event_time_node.and_then(|n| self.string(n, "event_time"));
        let event_id_node = fields.get("event_id");
        let event_id = event_id_node.and_then(|n| self.string(n, "event_id"));
        if let (Some(schema), Some(node), Some(path)) = (&schema, event_id_node, &event_id) {
            self.check_event_id(schema, node.at, path);
        }
        if let Some(schema) = &schema {
            if let Some(entity) = entity {
                for ((at, path), key) in key_fields.iter().zip(&entity.keys) {
                    let Some(field) = self.avro_field(schema, path, *at, "key field") else {
                        continue;
                    };
                    if !mapping::accepts(ValueType::Scalar(key.key_type), field.schema) {
                        self.error(*at, format!(
                            "key field `{path}` is Avro {}, but key `{}` of entity `{}` is {}; pick a field of that type or change the key type",
                            mapping::avro_type_name(field.schema), key.name, entity.name, key.key_type
                        ));
                    } else if field.optional {
                        self.error(
                            *at,
                            format!(
                                "key field `{path}` may be null; a key field must always be present"
                            ),
                        );
                    }
                }
            }
            if let (Some(node), Some(path)) = (event_time_node, &event_time)
                && let Some(field) = self.avro_field(schema, path, node.at, "event time field")
                && !mapping::is_event_time(field.schema)
            {
                self.error(node.at, format!(
                    "event time field `{path}` is Avro {}; use a timestamp-millis, timestamp-micros or long (milliseconds) field",
                    mapping::avro_type_name(field.schema)
                ));
            }
        }
        Some((
            Source {
                topic: topic?,
                schema: schema_ref,
                key_fields: key_fields.into_iter().map(|(_, path)| path).collect(),
                event_time: event_time?,
                event_id,
            },
            schema,
        ))
    }

    /// Checks that the event id at `path` is a field of `schema` that every event has, of a
    /// type that identifies: a string, an integer, bytes or a UUID.
    fn check_event_id(&mut self, schema: &Schema, at: Position, path: &str) {
        let Some(field) = self.avro_field(schema, path, at, "event id field") else {
            return;
        };
        if !mapping::is_identifier(field.schema) {
            self.error(at, format!(
                "event id field `{path}` is Avro {}; use a string, int, long, bytes, fixed or uuid field",
                mapping::avro_type_name(field.schema)
            ));
        } else if field.optional {
            self.error(
                at,
                format!("event id field `{path}` may be null; an event id must always be present"),
            );
        }
    }

    fn feature(&mut self, node: &Node, view: &str, schema: Option<&Schema>) -> Option<Feature> {
        let fields = self.fields(
            node,
            &format!("a feature of {view}"),
            &[
                "name",
                "type",
                "from",
                "default",
                "aggregate",
                "where",
                "description",
            ],
        )?;
        let name = self
            .required(&fields, "name", "a feature")
            .and_then(|n| self.name(n, "feature name"));
        let what = name
            .as_ref()
            .map_or_else(|| "a feature".to_owned(), |n| format!("feature `{n}`"));
        let type_node = self.required(&fields, "type", &what);
        let value_type = type_node.and_then(|type_node| {
            let text = self.string(type_node, "type")?;
            match text.parse::<ValueType>() {
                Ok(value_type) => Some(value_type),
                Err(error) => {
                    self.error(type_node.at, format!("{what}: {error}"));
                    None
                }
            }
        });
        let mut aggregate_filter = None;
        let derivation = match (fields.get("from"), fields.get("aggregate")) {
            (Some(from), None) => {
                let path = self.string(from, "from")?;
                if let (Some(schema), Some(value_type)) = (schema, value_type)
                    && let Some(field) = self.avro_field(schema, &path, from.at, "source field")
                    && !mapping::accepts(value_type, field.schema)
                {
                    self.error(from.at, format!(
                        "{what} is {value_type}, but its source field `{path}` is Avro {}; change the feature type or pick another field",
                        mapping::avro_type_name(field.schema)
                    ));
                }
                Derivation::Field(path)
            }
            (None, Some(aggregate)) => {
                let (aggregate, filter) = self.aggregate(aggregate, &what, value_type, schema)?;
                if let Some(filter) = filter {
                    if let Some(outer) = fields.get("where") {
                        self.error(outer.at, format!("{what} has a `where` beside its aggregate and one inside it; keep the one inside"));
                    }
                    aggregate_filter = Some(filter);
                }
                Derivation::Aggregate(aggregate)
            }
            _ => {
                self.error(
                    fields.at,
                    format!(
                        "{what} needs exactly one of `from` (an Avro field path) or `aggregate`"
                    ),
                );
                return None;
            }
        };
        let default = match (fields.get("default"), value_type) {
            (Some(default), Some(value_type)) => {
                Some(self.default_value(default, value_type, &what)?)
            }
            _ => None,
        };
        let description = self.optional_string(fields.get("description"), "description");
        let filter = match (aggregate_filter, fields.get("where")) {
            (Some(filter), _) => Some(filter),
            (None, Some(node)) => Some(self.filter(node, &what, schema)?),
            (None, None) => None,
        };
        Some(Feature {
            name: name?,
            value_type: value_type?,
            derivation,
            default,
            description,
            filter,
        })
    }

    fn aggregate(
        &mut self,
        node: &Node,
        what: &str,
        declared: Option<ValueType>,
        schema: Option<&Schema>,
    ) -> Option<(Aggregate, Option<Filter>)> {
        let where_ = format!("the aggregate of {what}");
        let fields = self.fields(
            node,
            &where_,
            &["fn", "of", "where", "window", "resolution", "k"],
        )?;
        let function_node = self.required(&fields, "fn", &where_)?;
        let function_name = self.string(function_node, "fn")?;
        let k = match fields.get("k") {
            Some(k_node) => match k_node.kind {
                Kind::Int(k) if (1..=i64::from(MAX_LAST_K)).contains(&k) => Some(k as u32),
                _ => {
                    self.error(
                        k_node.at,
                        format!("`k` must be a whole number from 1 to {MAX_LAST_K}"),
                    );
                    return None;
                }
            },
            None => None,
        };
        let Some(function) = AggregateFunction::from_name(&function_name, k) else {
            let message = if function_name == "last_k" {
                "`last_k` needs `k`, the number of values to keep".to_owned()
            } else {
                format!(
                    "unknown aggregate function `{function_name}`; use one of {}",
                    AggregateFunction::NAMES
                )
            };
            self.error(function_node.at, message);
            return None;
        };
        let window = match fields.get("window") {
            Some(window_node) => {
                let window = self.duration(window_node, "window")?;
                if window > MAX_WINDOW {
                    self.error(window_node.at, format!("window {window} is longer than {MAX_WINDOW}; omit `window` for a lifetime aggregate"));
                    return None;
                }
                Some(window)
            }
            None => None,
        };
        let resolution = match (window, fields.get("resolution")) {
            (None, Some(resolution_node)) => {
                self.error(
                    resolution_node.at,
                    "`resolution` applies to windows; a lifetime aggregate has none".to_owned(),
                );
                return None;
            }
            (None, None) => None,
            (Some(window), None) => Some(default_resolution(window)),
            (Some(window), Some(resolution_node)) => {
                let resolution = self.duration(resolution_node, "resolution")?;
                if let Err(reason) = check_resolution(window, resolution) {
                    self.error(resolution_node.at, reason);
                    return None;
                }
                Some(resolution)
            }
        };
        let of = match fields.get("of") {
            Some(of_node) => Some((of_node.at, self.string(of_node, "of")?)),
            None => None,
        };
        let input_type = match (&of, schema) {
            (Some((at, path)), Some(schema)) => {
                let field = self.avro_field(schema, path, *at, "aggregated field")?;
                Some(Some(avro_scalar(field.schema).ok_or_else(|| {
                    self.error(*at, format!("aggregated field `{path}` is Avro {}; aggregate a scalar field", mapping::avro_type_name(field.schema)));
                })
                .ok()?))
            }
            (Some(_), None) => None, // a registry subject: checked at ingest
            (None, _) => Some(None),
        };
        if let (Some(input), Some(declared)) = (input_type, declared) {
            match function.output_type(input) {
                Ok(output) if output == declared => {}
                Ok(output) => self.error(node.at, format!("{what} is declared {declared}, but `{function}` of this field gives {output}; declare it as {output}")),
                Err(reason) => self.error(node.at, format!("{what}: {reason}")),
            }
        }
        let filter = match fields.get("where") {
            Some(where_node) => Some(self.filter(where_node, what, schema)?),
            None => None,
        };
        let aggregate = Aggregate {
            function,
            of: of.map(|(_, path)| path),
            window,
            resolution,
        };
        Some((aggregate, filter))
    }

    fn default_value(&mut self, node: &Node, value_type: ValueType, what: &str) -> Option<Value> {
        let value = match (value_type, &node.kind) {
            (ValueType::Scalar(ScalarType::Bool), Kind::Bool(b)) => Some(Value::Bool(*b)),
            (ValueType::Scalar(ScalarType::Int32), Kind::Int(i)) => {
                i32::try_from(*i).ok().map(Value::Int32)
            }
            (ValueType::Scalar(ScalarType::Int64), Kind::Int(i)) => Some(Value::Int64(*i)),
            (ValueType::Scalar(ScalarType::Float32), Kind::Int(i)) => {
                Some(Value::Float32(*i as f32))
            }
            (ValueType::Scalar(ScalarType::Float32), Kind::Float(x)) => {
                Some(Value::Float32(*x as f32))
            }
            (ValueType::Scalar(ScalarType::Float64), Kind::Int(i)) => {
                Some(Value::Float64(*i as f64))
            }
            (ValueType::Scalar(ScalarType::Float64), Kind::Float(x)) => Some(Value::Float64(*x)),
            (ValueType::Scalar(ScalarType::String), Kind::Str(s)) => Some(Value::String(s.clone())),
            (ValueType::List(_), Kind::Seq(items)) if items.is_empty() => {
                Some(empty_list(value_type))
            }
            _ => None,
        };
        if value.is_none() {
            self.error(
                node.at,
                format!(
                    "the default of {what} must be a {value_type} (lists take only `[]`), not {}",
                    node.kind.describe()
                ),
            );
        }
        value
    }

    fn feature_service(&mut self, node: &Node) {
        let Some(fields) = self.fields(
            node,
            "a feature service",
            &["name", "description", "features"],
        ) else {
            return;
        };
        let name = self
            .required(&fields, "name", "a feature service")
            .and_then(|n| self.name(n, "feature service name"));
        let what = name.as_ref().map_or_else(
            || "a feature service".to_owned(),
            |n| format!("feature service `{n}`"),
        );
        let description = self.optional_string(fields.get("description"), "description");
        let mut features = Vec::new();
        let features_node = self.required(&fields, "features", &what);
        let items = self.items(features_node, "features");
        for item in items {
            let Some(text) = self.string(item, "a feature reference") else {
                continue;
            };
            let reference: ServiceFeature = match text.parse() {
                Ok(reference) => reference,
                Err(error) => {
                    self.error(item.at, error);
                    continue;
                }
            };
            let view = self
                .definitions
                .feature_views
                .iter()
                .find(|view| view.name == reference.view);
            match view {
                None => self.error(
                    item.at,
                    format!(
                        "{what} names feature view `{}`, which is not declared",
                        reference.view
                    ),
                ),
                Some(view) if !view.features.iter().any(|f| f.name == reference.feature) => {
                    let known: Vec<String> =
                        view.features.iter().map(|f| f.name.to_string()).collect();
                    self.error(
                        item.at,
                        format!(
                            "feature view `{}` has no feature `{}`; it has: {}",
                            view.name,
                            reference.feature,
                            display_list(&known)
                        ),
                    );
                }
                Some(_) => features.push(reference),
            }
        }
        let Some(name) = name else { return };
        if self
            .definitions
            .feature_services
            .iter()
            .any(|service| service.name == name)
        {
            self.declared_twice(node.at, "feature service", &name);
            return;
        }
        self.definitions.feature_services.push(FeatureService {
            name,
            description,
            features,
        });
    }
}

/// The feature type an Avro scalar naturally maps to, for aggregates.
fn avro_scalar(schema: &Schema) -> Option<ValueType> {
    ScalarType::ALL
        .into_iter()
        .map(ValueType::Scalar)
        .find(|candidate| mapping::accepts(*candidate, schema))
}

fn empty_list(value_type: ValueType) -> Value {
    match value_type {
        ValueType::List(ScalarType::Bool) => Value::BoolList(Vec::new()),
        ValueType::List(ScalarType::Int32) => Value::Int32List(Vec::new()),
        ValueType::List(ScalarType::Int64) => Value::Int64List(Vec::new()),
        ValueType::List(ScalarType::Float32) => Value::Float32List(Vec::new()),
        ValueType::List(ScalarType::Float64) => Value::Float64List(Vec::new()),
        ValueType::List(ScalarType::String) => Value::StringList(Vec::new()),
        ValueType::List(ScalarType::Bytes) => Value::BytesList(Vec::new()),
        _ => Value::TimestampList(Vec::new()),
    }
}

fn display_list(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}
