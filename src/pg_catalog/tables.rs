//! `pg_catalog` as Postgres tools read it.
//!
//! datafusion-pg-catalog provides the schema: the fixed catalogs exported
//! from a real Postgres (pg_type, pg_proc, pg_am, …) and the functions
//! psql and drivers call. The tables that describe *relations* it derives
//! from DataFusion alone, so it cannot tell a materialized view from a
//! view, knows no view definition, comment or primary key, and numbers
//! relations in the order it meets them. This module puts Freshet's own in
//! their place, computed from the catalog when read:
//!
//! - `pg_namespace`, `pg_class` (relkind `r` tables, `v` views, `m`
//!   materialized views and sinks, `f` sources, `i` primary-key indexes),
//!   `pg_attribute`, `pg_attrdef`, `pg_index`, `pg_constraint` (primary
//!   keys), `pg_description` (COMMENT ON), `pg_views`, `pg_matviews`,
//!   `pg_tables`, `pg_settings`, `pg_roles`.
//!
//! OIDs are stable across restarts and consistent across these tables: a
//! Freshet relation's is `16384 + 2 * id` (its primary-key index `+ 1`),
//! so functions such as `obj_description(oid)` find the relation from the
//! number alone; system tables and schemas get fixed Postgres OIDs where
//! Postgres has them and a name hash otherwise.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Float32Array, Float64Array, Int16Array, Int32Array, Int64Array, ListArray, RecordBatch,
    StringArray, new_null_array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{CatalogProviderList, SchemaProvider, TableProvider};
use datafusion::error::{DataFusionError, Result as DfResult};
use pgwire::api::Type;

use super::computed_table::{ComputedRows, ComputedTable};
use crate::catalog::{Catalog, Relation, RelationKind};
use crate::stream::RelationId;

/// The first OID Postgres leaves to user objects.
const FIRST_USER_OID: u32 = 16384;
/// Postgres's OIDs for the bootstrap superuser and well-known schemas.
pub const SUPERUSER_OID: i32 = 10;
const PG_CATALOG_OID: u32 = 11;
const PUBLIC_OID: u32 = 2200;
const INFORMATION_SCHEMA_OID: u32 = 13_000;
/// `pg_class`'s own OID (the `classoid` of comments on relations).
pub const PG_CLASS_OID: u32 = 1259;
const BTREE_AM_OID: i32 = 403;
const HEAP_AM_OID: i32 = 2;

/// The tables this module computes (the rest come from the crate).
const OWN_TABLES: &[&str] = &[
    "pg_namespace",
    "pg_class",
    "pg_attribute",
    "pg_attrdef",
    "pg_index",
    "pg_constraint",
    "pg_description",
    "pg_views",
    "pg_matviews",
    "pg_tables",
    "pg_settings",
    "pg_roles",
];

/// Columns clients read that the crate's tables lack.
fn extra_columns() -> Vec<(&'static str, &'static str, DataType)> {
    let text_array = DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)));
    // int2vector: an array, so clients can unnest a key's columns.
    let int_array = DataType::List(Arc::new(Field::new("item", DataType::Int16, true)));
    vec![
        ("pg_class", "reloptions", text_array.clone()),
        ("pg_class", "relacl", text_array.clone()),
        ("pg_attribute", "attacl", text_array),
        ("pg_index", "indkey", int_array.clone()),
        // oidvector and int2vector, per key column (SQLAlchemy unnests both).
        ("pg_index", "indclass", DataType::List(Arc::new(Field::new("item", DataType::Int64, true)))),
        ("pg_index", "indoption", int_array.clone()),
        ("pg_constraint", "conkey", int_array.clone()),
        ("pg_constraint", "confkey", int_array),
    ]
}

/// OID of a Freshet relation.
pub fn relation_oid(id: RelationId) -> u32 {
    FIRST_USER_OID + 2 * id
}

/// OID of a Freshet relation's primary-key index.
fn index_oid(id: RelationId) -> u32 {
    relation_oid(id) + 1
}

/// OID of a Freshet relation's primary-key constraint.
pub fn pkey_oid(id: RelationId) -> i64 {
    i64::from(hashed_oid(&format!("pkey {}", relation_oid(id)), false))
}

/// The relation id an OID names, with whether it names its index.
pub fn relation_of_oid(oid: i64) -> Option<(RelationId, bool)> {
    let offset = u32::try_from(oid).ok()?.checked_sub(FIRST_USER_OID)?;
    let id = offset / 2;
    (id < 400_000_000).then_some((id, offset % 2 == 1))
}

/// A stable OID for a system object that Postgres has no fixed one for:
/// a hash of its name, above every relation's. pg_catalog's tables hash
/// into [1e9, 1.5e9), everything else into [1.5e9, 2e9), so the number
/// alone tells whether an object is on the search path (see
/// [`visible`]).
fn hashed_oid(name: &str, on_search_path: bool) -> u32 {
    // FNV-1a: stable across builds (std's hasher is not).
    let mut hash: u32 = 0x811c_9dc5;
    for byte in name.bytes() {
        hash = (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193);
    }
    let base = if on_search_path { 1_000_000_000 } else { 1_500_000_000 };
    base + hash % 500_000_000
}

/// `pg_table_is_visible`: whether a relation is found by its bare name
/// (its schema is on the search path: public, then pg_catalog).
pub fn visible(oid: i64, catalog: &Catalog) -> bool {
    match relation_of_oid(oid) {
        Some((id, _)) => catalog.get(id).is_some_and(|r| r.name.schema == "public"),
        // Postgres's own fixed OIDs, and hashed pg_catalog tables.
        None => oid < i64::from(FIRST_USER_OID) || (1_000_000_000..1_500_000_000).contains(&oid),
    }
}

fn namespace_oid(name: &str) -> u32 {
    match name {
        "pg_catalog" => PG_CATALOG_OID,
        "public" => PUBLIC_OID,
        "information_schema" => INFORMATION_SCHEMA_OID,
        other => hashed_oid(&format!("schema {other}"), false),
    }
}

fn system_table_oid(schema: &str, table: &str) -> u32 {
    if schema == "pg_catalog" {
        let known = match table {
            "pg_type" => 1247,
            "pg_attribute" => 1249,
            "pg_proc" => 1255,
            "pg_class" => PG_CLASS_OID,
            "pg_database" => 1262,
            "pg_namespace" => 2615,
            "pg_description" => 2609,
            "pg_index" => 2610,
            "pg_constraint" => 2606,
            "pg_attrdef" => 2604,
            _ => 0,
        };
        if known != 0 {
            return known;
        }
    }
    hashed_oid(&format!("{schema}.{table}"), schema == "pg_catalog")
}

/// One relation as the catalog tables show it.
struct RelationRow {
    oid: u32,
    namespace: String,
    name: String,
    /// Postgres relkind: r, v, m, f.
    kind: &'static str,
    schema: SchemaRef,
    /// Set for Freshet's own relations.
    relation: Option<Arc<Relation>>,
}

impl RelationRow {
    fn primary_key(&self) -> &[usize] {
        self.relation.as_ref().map_or(&[], |r| r.primary_key.as_slice())
    }
}

fn relkind(kind: RelationKind) -> &'static str {
    match kind {
        RelationKind::Table => "r",
        RelationKind::View => "v",
        RelationKind::MaterializedView | RelationKind::Sink => "m",
        RelationKind::Source => "f",
    }
}

/// Everything the relation tables show, read at once.
struct Objects {
    namespaces: Vec<(u32, String)>,
    relations: Vec<RelationRow>,
}

impl Objects {
    async fn read(catalogs: &Arc<dyn CatalogProviderList>, own: &Catalog, this: &PgCatalog) -> DfResult<Self> {
        let mut namespaces = BTreeMap::new();
        let mut relations = Vec::new();
        for catalog_name in catalogs.catalog_names() {
            let Some(catalog) = catalogs.catalog(&catalog_name) else { continue };
            for schema_name in catalog.schema_names() {
                namespaces.insert(schema_name.clone(), namespace_oid(&schema_name));
                let Some(schema) = catalog.schema(&schema_name) else { continue };
                let mut names = schema.table_names();
                names.sort();
                for name in names {
                    let qualified = crate::catalog::QualifiedName { schema: schema_name.clone(), name: name.clone() };
                    if let Some(relation) = own.by_name(&qualified) {
                        relations.push(RelationRow {
                            oid: relation_oid(relation.id),
                            namespace: schema_name.clone(),
                            name,
                            kind: relkind(relation.kind),
                            schema: relation.schema.clone(),
                            relation: Some(relation),
                        });
                        continue;
                    }
                    // A system table. pg_catalog's own: from this provider
                    // (which computes some of them) without building any.
                    let table_schema = if schema_name == "pg_catalog" {
                        this.table_schema(&name).await?
                    } else {
                        schema.table(&name).await?.map(|t| t.schema())
                    };
                    let Some(table_schema) = table_schema else { continue };
                    relations.push(RelationRow {
                        oid: system_table_oid(&schema_name, &name),
                        namespace: schema_name.clone(),
                        kind: if schema_name == "pg_catalog" && !name.starts_with("pg_stat") { "r" } else { "v" },
                        name,
                        schema: table_schema,
                        relation: None,
                    });
                }
            }
        }
        // Sinks keep no rows to query and are not DataFusion tables, but
        // they are objects users name (COMMENT ON, lineage, \d).
        for sink in own.list(RelationKind::Sink) {
            namespaces.entry(sink.name.schema.clone()).or_insert_with(|| namespace_oid(&sink.name.schema));
            relations.push(RelationRow {
                oid: relation_oid(sink.id),
                namespace: sink.name.schema.clone(),
                name: sink.name.name.clone(),
                kind: relkind(sink.kind),
                schema: sink.schema.clone(),
                relation: Some(sink),
            });
        }
        let namespaces = namespaces.into_iter().map(|(name, oid)| (oid, name)).collect();
        Ok(Self { namespaces, relations })
    }

    fn namespace(&self, name: &str) -> i32 {
        self.namespaces.iter().find(|(_, n)| n == name).map_or(0, |(oid, _)| *oid as i32)
    }
}

/// Fills a table of the crate's schema column by column: named columns
/// from `set`, the rest Postgres-like defaults (0, false, '', NULL).
struct Rows {
    schema: SchemaRef,
    count: usize,
    columns: HashMap<&'static str, ArrayRef>,
}

impl Rows {
    fn new(schema: &SchemaRef, count: usize) -> Self {
        Self { schema: schema.clone(), count, columns: HashMap::new() }
    }

    fn set(&mut self, name: &'static str, values: ArrayRef) -> &mut Self {
        self.columns.insert(name, values);
        self
    }

    fn text<S: AsRef<str>>(&mut self, name: &'static str, values: impl IntoIterator<Item = S>) -> &mut Self {
        let values: Vec<String> = values.into_iter().map(|s| s.as_ref().to_string()).collect();
        self.set(name, Arc::new(StringArray::from(values)))
    }

    fn int(&mut self, name: &'static str, values: impl IntoIterator<Item = i64>) -> &mut Self {
        self.set(name, Arc::new(Int64Array::from_iter_values(values)))
    }

    fn flag(&mut self, name: &'static str, values: impl IntoIterator<Item = bool>) -> &mut Self {
        self.set(name, Arc::new(BooleanArray::from_iter(values.into_iter().map(Some))))
    }

    fn finish(&self) -> DfResult<RecordBatch> {
        let columns = self
            .schema
            .fields()
            .iter()
            .map(|field| match self.columns.get(field.name().as_str()) {
                Some(values) if values.data_type() == field.data_type() => Ok(values.clone()),
                Some(values) => Ok(datafusion::arrow::compute::cast(values, field.data_type())?),
                None => Ok(default_column(field, self.count)),
            })
            .collect::<DfResult<Vec<_>>>()?;
        let options = datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(self.count));
        Ok(RecordBatch::try_new_with_options(self.schema.clone(), columns, &options)?)
    }
}

/// `relacl`: NULL (the owner's default rights) or the ACL items.
fn acl_column<'a>(acls: impl Iterator<Item = Option<&'a Vec<String>>>) -> ArrayRef {
    let mut builder = datafusion::arrow::array::ListBuilder::new(datafusion::arrow::array::StringBuilder::new());
    for acl in acls {
        match acl {
            Some(items) => {
                for item in items {
                    builder.values().append_value(item);
                }
                builder.append(true);
            }
            None => builder.append(false),
        }
    }
    Arc::new(builder.finish())
}

fn default_column(field: &Field, rows: usize) -> ArrayRef {
    match field.data_type() {
        DataType::Boolean => Arc::new(BooleanArray::from(vec![false; rows])),
        DataType::Int16 => Arc::new(Int16Array::from(vec![0; rows])),
        DataType::Int32 => Arc::new(Int32Array::from(vec![0; rows])),
        DataType::Int64 => Arc::new(Int64Array::from(vec![0; rows])),
        DataType::Float32 => Arc::new(Float32Array::from(vec![0.0; rows])),
        DataType::Float64 => Arc::new(Float64Array::from(vec![0.0; rows])),
        DataType::Utf8 if !field.is_nullable() => Arc::new(StringArray::from(vec![""; rows])),
        other => new_null_array(other, rows),
    }
}

/// Postgres's type, length, by-value, alignment, storage and modifier
/// for a column of `data_type`.
fn pg_type_of(data_type: &DataType) -> (u32, i16, bool, &'static str, &'static str, i32) {
    let pg = arrow_pg::datatypes::into_pg_type(data_type).unwrap_or(Type::TEXT);
    let typmod = match data_type {
        // numeric(p, s): ((p << 16) | s) + 4, as Postgres stores it.
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => ((i32::from(*p) << 16) | i32::from(*s as u8)) + 4,
        _ => -1,
    };
    let (len, byval, align, storage) = match pg {
        Type::BOOL | Type::CHAR => (1, true, "c", "p"),
        Type::INT2 => (2, true, "s", "p"),
        Type::INT4 | Type::FLOAT4 | Type::DATE => (4, true, "i", "p"),
        Type::INT8 | Type::FLOAT8 | Type::TIME | Type::TIMESTAMP | Type::TIMESTAMPTZ => (8, true, "d", "p"),
        Type::INTERVAL => (16, false, "d", "p"),
        Type::NUMERIC => (-1, false, "i", "m"),
        _ => (-1, false, "i", "x"),
    };
    (pg.oid(), len, byval, align, storage, typmod)
}

/// The crate's pg_catalog with Freshet's relation tables in place of its own.
pub struct PgCatalog {
    inner: Arc<dyn SchemaProvider>,
    catalogs: Arc<dyn CatalogProviderList>,
    catalog: Arc<Catalog>,
    /// The schema of each of [`OWN_TABLES`], as the crate has it.
    schemas: HashMap<&'static str, SchemaRef>,
}

impl std::fmt::Debug for PgCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgCatalog")
    }
}

impl PgCatalog {
    /// Wraps `inner` (the crate's provider, already set up).
    pub async fn new(
        inner: Arc<dyn SchemaProvider>,
        catalogs: Arc<dyn CatalogProviderList>,
        catalog: Arc<Catalog>,
    ) -> DfResult<Self> {
        let mut schemas = HashMap::new();
        for &name in OWN_TABLES {
            let schema = match inner.table(name).await? {
                Some(table) => table.schema(),
                None => return Err(DataFusionError::Plan(format!("pg_catalog.{name} is missing"))),
            };
            // Every column nullable: rows of ours may leave some unknown.
            let mut fields: Vec<Field> =
                schema.fields().iter().map(|f| f.as_ref().clone().with_nullable(true)).collect();
            // Columns Postgres has that the crate's layout lacks (NULL here).
            // (Where the crate has one as text, Postgres's array type wins:
            // psql's \dp reads relacl with array_to_string.)
            for (table, column, data_type) in extra_columns() {
                if table != name {
                    continue;
                }
                match fields.iter_mut().find(|f| f.name() == column) {
                    Some(field) => *field = Field::new(column, data_type, true),
                    None => fields.push(Field::new(column, data_type, true)),
                }
            }
            schemas.insert(name, Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone())));
        }
        Ok(Self { inner, catalogs, catalog, schemas })
    }

    async fn table_schema(&self, name: &str) -> DfResult<Option<SchemaRef>> {
        if let Some(schema) = self.schemas.get(name) {
            return Ok(Some(schema.clone()));
        }
        Ok(self.inner.table(name).await?.map(|t| t.schema()))
    }

    async fn rows(&self, table: &'static str) -> DfResult<RecordBatch> {
        let schema = self
            .schemas
            .get(table)
            .ok_or_else(|| DataFusionError::Internal(format!("pg_catalog has no schema for {table}")))?;
        if table == "pg_settings" {
            return settings_rows(schema);
        }
        if table == "pg_roles" {
            let roles = self.catalog.access.roles();
            let mut rows = Rows::new(schema, roles.len());
            rows.int("oid", roles.iter().map(|r| i64::from(role_oid(&r.name))))
                .text("rolname", roles.iter().map(|r| &r.name))
                .flag("rolsuper", roles.iter().map(|r| r.superuser))
                .flag("rolinherit", roles.iter().map(|_| true))
                .flag("rolcreaterole", roles.iter().map(|r| r.superuser))
                .flag("rolcreatedb", roles.iter().map(|r| r.superuser))
                .flag("rolcanlogin", roles.iter().map(|r| r.login))
                .flag("rolreplication", roles.iter().map(|r| r.superuser))
                .flag("rolbypassrls", roles.iter().map(|r| r.superuser))
                .int("rolconnlimit", roles.iter().map(|_| -1))
                .text("rolpassword", roles.iter().map(|_| "********"));
            return rows.finish();
        }
        let objects = Objects::read(&self.catalogs, &self.catalog, self).await?;
        match table {
            "pg_namespace" => {
                let mut rows = Rows::new(schema, objects.namespaces.len());
                rows.int("oid", objects.namespaces.iter().map(|(oid, _)| i64::from(*oid)))
                    .text("nspname", objects.namespaces.iter().map(|(_, name)| name))
                    .int("nspowner", objects.namespaces.iter().map(|_| i64::from(SUPERUSER_OID)));
                rows.finish()
            }
            "pg_class" => class_rows(schema, &objects, &self.catalog),
            "pg_attribute" => attribute_rows(schema, &objects),
            "pg_attrdef" => {
                let mut oids = Vec::new();
                let (mut rel, mut num, mut text) = (Vec::new(), Vec::new(), Vec::new());
                for row in &objects.relations {
                    let Some(relation) = &row.relation else { continue };
                    for (i, field) in relation.schema.fields().iter().enumerate() {
                        if let Some(default) = relation.column_defaults.get(field.name()) {
                            oids.push(i64::from(hashed_oid(&format!("default {} {i}", row.oid), false)));
                            rel.push(i64::from(row.oid));
                            num.push(i as i64 + 1);
                            text.push(default.to_string());
                        }
                    }
                }
                let mut rows = Rows::new(schema, oids.len());
                rows.int("oid", oids).int("adrelid", rel).int("adnum", num).text("adbin", text);
                rows.finish()
            }
            "pg_index" => {
                let keyed: Vec<&RelationRow> =
                    objects.relations.iter().filter(|r| !r.primary_key().is_empty()).collect();
                let mut rows = Rows::new(schema, keyed.len());
                let keys = || keyed.iter().map(|r| r.primary_key().iter().map(|&i| i as i64 + 1).collect::<Vec<_>>());
                rows.int(
                    "indexrelid",
                    keyed.iter().map(|r| r.relation.as_ref().map_or(0, |r| i64::from(index_oid(r.id)))),
                )
                .int("indrelid", keyed.iter().map(|r| i64::from(r.oid)))
                .int("indnatts", keyed.iter().map(|r| r.primary_key().len() as i64))
                .int("indnkeyatts", keyed.iter().map(|r| r.primary_key().len() as i64))
                .flag("indisunique", keyed.iter().map(|_| true))
                .flag("indisprimary", keyed.iter().map(|_| true))
                .flag("indimmediate", keyed.iter().map(|_| true))
                .flag("indisvalid", keyed.iter().map(|_| true))
                .flag("indisready", keyed.iter().map(|_| true))
                .flag("indislive", keyed.iter().map(|_| true))
                .flag("indcheckxmin", keyed.iter().map(|_| false));
                let key_field = schema.field_with_name("indkey").ok().map(|f| f.data_type().clone());
                if let Some(data_type) = key_field {
                    rows.set("indkey", vector_column(&data_type, keys())?);
                }
                // No operator classes of note (0) and no per-column options
                // (0: ascending, nulls last), one per key column.
                for column in ["indclass", "indoption"] {
                    if let Ok(field) = schema.field_with_name(column) {
                        let zeros = keys().map(|k| vec![0; k.len()]);
                        rows.set(column, vector_column(field.data_type(), zeros)?);
                    }
                }
                rows.finish()
            }
            "pg_constraint" => {
                let keyed: Vec<&RelationRow> =
                    objects.relations.iter().filter(|r| !r.primary_key().is_empty()).collect();
                let mut rows = Rows::new(schema, keyed.len());
                rows.int("oid", keyed.iter().map(|r| r.relation.as_ref().map_or(0, |r| pkey_oid(r.id))))
                    .text("conname", keyed.iter().map(|r| format!("{}_pkey", r.name)))
                    .int("connamespace", keyed.iter().map(|r| i64::from(objects.namespace(&r.namespace))))
                    .text("contype", keyed.iter().map(|_| "p"))
                    .flag("condeferrable", keyed.iter().map(|_| false))
                    .flag("condeferred", keyed.iter().map(|_| false))
                    .flag("convalidated", keyed.iter().map(|_| true))
                    .int("conrelid", keyed.iter().map(|r| i64::from(r.oid)))
                    .int(
                        "conindid",
                        keyed.iter().map(|r| r.relation.as_ref().map_or(0, |r| i64::from(index_oid(r.id)))),
                    )
                    .flag("conislocal", keyed.iter().map(|_| true))
                    .flag("connoinherit", keyed.iter().map(|_| true))
                    .text("confupdtype", keyed.iter().map(|_| " "))
                    .text("confdeltype", keyed.iter().map(|_| " "))
                    .text("confmatchtype", keyed.iter().map(|_| " "));
                let key_field = schema.field_with_name("conkey").ok().map(|f| f.data_type().clone());
                if let Some(data_type) = key_field {
                    let keys = keyed.iter().map(|r| r.primary_key().iter().map(|&i| i as i64 + 1).collect::<Vec<_>>());
                    rows.set("conkey", vector_column(&data_type, keys)?);
                }
                rows.finish()
            }
            "pg_description" => {
                let (mut objoid, mut subid, mut text) = (Vec::new(), Vec::new(), Vec::new());
                for row in &objects.relations {
                    let Some(relation) = &row.relation else { continue };
                    for (column, comment) in relation.comments.lock().iter() {
                        objoid.push(i64::from(row.oid));
                        subid.push(i64::from(*column));
                        text.push(comment.clone());
                    }
                }
                let mut rows = Rows::new(schema, objoid.len());
                rows.int("classoid", objoid.iter().map(|_| i64::from(PG_CLASS_OID)))
                    .int("objoid", objoid)
                    .int("objsubid", subid)
                    .text("description", text);
                rows.finish()
            }
            "pg_views" | "pg_matviews" => {
                let want = if table == "pg_views" { "v" } else { "m" };
                let views: Vec<&RelationRow> = objects.relations.iter().filter(|r| r.kind == want).collect();
                let mut rows = Rows::new(schema, views.len());
                let name_column = if table == "pg_views" { "viewname" } else { "matviewname" };
                let owner_column = if table == "pg_views" { "viewowner" } else { "matviewowner" };
                rows.text("schemaname", views.iter().map(|r| &r.namespace))
                    .text(name_column, views.iter().map(|r| &r.name))
                    .text(owner_column, views.iter().map(|r| self.owner_of(r)))
                    .flag("ispopulated", views.iter().map(|_| true))
                    .flag("hasindexes", views.iter().map(|_| false))
                    .text("definition", views.iter().map(|r| view_definition(r.relation.as_deref())));
                rows.finish()
            }
            "pg_tables" => {
                let tables: Vec<&RelationRow> = objects.relations.iter().filter(|r| r.kind == "r").collect();
                let mut rows = Rows::new(schema, tables.len());
                rows.text("schemaname", tables.iter().map(|r| &r.namespace))
                    .text("tablename", tables.iter().map(|r| &r.name))
                    .text("tableowner", tables.iter().map(|r| self.owner_of(r)))
                    .flag("hasindex", tables.iter().map(|r| !r.primary_key().is_empty()));
                rows.finish()
            }
            other => Err(DataFusionError::Plan(format!("pg_catalog.{other} is not computed here"))),
        }
    }
}

/// A role's OID: Postgres's 10 for the bootstrap superuser, a hash of
/// the name for the others.
pub fn role_oid(name: &str) -> u32 {
    if name == crate::catalog::privileges::BOOTSTRAP_ROLE { SUPERUSER_OID as u32 } else { hashed_oid(name, false) }
}

/// The role with this OID.
pub fn role_of_oid(oid: i64, catalog: &Catalog) -> Option<String> {
    catalog.access.roles().into_iter().map(|r| r.name).find(|name| i64::from(role_oid(name)) == oid)
}

impl PgCatalog {
    fn owner_of(&self, row: &RelationRow) -> String {
        match &row.relation {
            Some(relation) => self.catalog.access.owner(relation.id),
            None => crate::catalog::privileges::BOOTSTRAP_ROLE.to_string(),
        }
    }
}

/// A view's definition as `pg_get_viewdef` and `pg_views` show it.
pub fn view_definition(relation: Option<&Relation>) -> String {
    match relation.and_then(|r| r.definition.as_deref()) {
        Some(sql) => format!(" {};", sql.trim().trim_end_matches(';')),
        None => String::new(),
    }
}

fn class_rows(schema: &SchemaRef, objects: &Objects, catalog: &Catalog) -> DfResult<RecordBatch> {
    let owner_oid = |row: &RelationRow| match &row.relation {
        Some(relation) => role_oid(&catalog.access.owner(relation.id)),
        None => SUPERUSER_OID as u32,
    };
    // Relations, then one index per primary key.
    struct Class<'a> {
        oid: u32,
        name: String,
        namespace: &'a str,
        kind: &'static str,
        columns: usize,
        has_index: bool,
        owner: u32,
        acl: Option<Vec<String>>,
    }
    let mut classes: Vec<Class> = Vec::new();
    for row in &objects.relations {
        classes.push(Class {
            oid: row.oid,
            name: row.name.clone(),
            namespace: &row.namespace,
            kind: row.kind,
            columns: row.schema.fields().len(),
            has_index: !row.primary_key().is_empty(),
            owner: owner_oid(row),
            acl: row.relation.as_ref().and_then(|r| catalog.access.acl(r.id)).map(|acl| acl.to_acl_items()),
        });
        if let (Some(relation), false) = (&row.relation, row.primary_key().is_empty()) {
            classes.push(Class {
                oid: index_oid(relation.id),
                name: format!("{}_pkey", row.name),
                namespace: &row.namespace,
                kind: "i",
                columns: row.primary_key().len(),
                has_index: false,
                owner: owner_oid(row),
                acl: None,
            });
        }
    }
    let mut rows = Rows::new(schema, classes.len());
    rows.int("oid", classes.iter().map(|c| i64::from(c.oid)))
        .text("relname", classes.iter().map(|c| &c.name))
        .int("relnamespace", classes.iter().map(|c| i64::from(objects.namespace(c.namespace))))
        .int("relowner", classes.iter().map(|c| i64::from(c.owner)))
        .int(
            "relam",
            classes.iter().map(|c| {
                i64::from(if c.kind == "i" {
                    BTREE_AM_OID
                } else if matches!(c.kind, "r" | "m") {
                    HEAP_AM_OID
                } else {
                    0
                })
            }),
        )
        .int("relfilenode", classes.iter().map(|c| i64::from(c.oid)))
        .set("reltuples", Arc::new(Float32Array::from(vec![-1.0f32; classes.len()])))
        .flag("relhasindex", classes.iter().map(|c| c.has_index))
        .text("relpersistence", classes.iter().map(|_| "p"))
        .text("relkind", classes.iter().map(|c| c.kind))
        .int("relnatts", classes.iter().map(|c| c.columns as i64))
        .set("relacl", acl_column(classes.iter().map(|c| c.acl.as_ref())))
        .flag("relispopulated", classes.iter().map(|_| true))
        .text("relreplident", classes.iter().map(|c| if c.kind == "i" { "n" } else { "d" }));
    rows.finish()
}

fn attribute_rows(schema: &SchemaRef, objects: &Objects) -> DfResult<RecordBatch> {
    let mut relid = Vec::new();
    let mut names = Vec::new();
    let mut types = Vec::new();
    let mut lens = Vec::new();
    let mut nums = Vec::new();
    let mut typmods = Vec::new();
    let mut byvals = Vec::new();
    let mut aligns = Vec::new();
    let mut storages = Vec::new();
    let mut not_null = Vec::new();
    let mut has_default = Vec::new();
    let mut push = |oid: u32, num: usize, field: &Field, default: bool| {
        let (type_oid, len, byval, align, storage, typmod) = pg_type_of(field.data_type());
        relid.push(i64::from(oid));
        names.push(field.name().clone());
        types.push(i64::from(type_oid));
        lens.push(i64::from(len));
        nums.push(num as i64);
        typmods.push(i64::from(typmod));
        byvals.push(byval);
        aligns.push(align);
        storages.push(storage);
        not_null.push(!field.is_nullable());
        has_default.push(default);
    };
    for row in &objects.relations {
        for (i, field) in row.schema.fields().iter().enumerate() {
            let default = row.relation.as_ref().is_some_and(|r| r.column_defaults.contains_key(field.name()));
            push(row.oid, i + 1, field, default);
        }
        if let Some(relation) = &row.relation {
            for (n, &i) in relation.primary_key.iter().enumerate() {
                push(index_oid(relation.id), n + 1, relation.schema.field(i), false);
            }
        }
    }
    let count = relid.len();
    let mut rows = Rows::new(schema, count);
    rows.int("attrelid", relid)
        .text("attname", names)
        .int("atttypid", types)
        .int("attstattarget", (0..count).map(|_| -1))
        .int("attlen", lens)
        .int("attnum", nums)
        .int("attcacheoff", (0..count).map(|_| -1))
        .int("atttypmod", typmods)
        .flag("attbyval", byvals)
        .text("attalign", aligns)
        .text("attstorage", storages)
        .flag("attnotnull", not_null)
        .flag("atthasdef", has_default)
        .flag("attislocal", (0..count).map(|_| true));
    rows.finish()
}

/// An `int2vector` column (pg_index.indkey, pg_constraint.conkey) in
/// whatever Arrow type the crate gives it.
fn vector_column(data_type: &DataType, values: impl Iterator<Item = Vec<i64>>) -> DfResult<ArrayRef> {
    let values: Vec<Vec<i64>> = values.collect();
    match data_type {
        DataType::List(item) => {
            let lists = values.iter().map(|v| Some(v.iter().map(|&x| Some(x)).collect::<Vec<_>>()));
            let list = ListArray::from_iter_primitive::<datafusion::arrow::datatypes::Int64Type, _, _>(lists);
            Ok(datafusion::arrow::compute::cast(&list, &DataType::List(item.clone()))?)
        }
        // Postgres prints an int2vector as the numbers separated by spaces.
        _ => {
            let text: Vec<String> =
                values.iter().map(|v| v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(" ")).collect();
            Ok(datafusion::arrow::compute::cast(&StringArray::from(text), data_type)?)
        }
    }
}

/// Settings as `SHOW` and `current_setting` give them (name, value,
/// description).
pub const SETTINGS: &[(&str, &str, &str)] = &[
    ("application_name", "", "Sets the application name to be reported in statistics and logs."),
    ("client_encoding", "UTF8", "Sets the client's character set encoding."),
    ("DateStyle", "ISO, MDY", "Sets the display format for date and time values."),
    (
        "default_transaction_isolation",
        // A transaction block reads one snapshot and the first committer
        // wins: snapshot isolation, which Postgres calls REPEATABLE READ.
        "repeatable read",
        "Sets the transaction isolation level of each new transaction.",
    ),
    ("default_transaction_read_only", "off", "Sets the default read-only status of new transactions."),
    ("extra_float_digits", "1", "Sets the number of digits displayed for floating-point values."),
    (
        "idle_in_transaction_session_timeout",
        "0",
        "Sets the maximum allowed idle time between queries, when in a transaction.",
    ),
    ("integer_datetimes", "on", "Shows whether datetimes are integer based."),
    ("IntervalStyle", "postgres", "Sets the display format for interval values."),
    ("is_superuser", "on", "Shows whether the current user is a superuser."),
    ("lc_collate", "C", "Shows the collation order locale."),
    ("lc_ctype", "C", "Shows the character classification and case conversion locale."),
    ("max_connections", "1000", "Sets the maximum number of concurrent connections."),
    ("max_identifier_length", "63", "Shows the maximum identifier length."),
    ("max_index_keys", "32", "Shows the maximum number of index keys."),
    ("search_path", "\"$user\", public", "Sets the schema search order for names that are not schema-qualified."),
    ("server_encoding", "UTF8", "Shows the server (database) character set encoding."),
    ("server_version", "16.6", "Shows the server version."),
    ("server_version_num", "160006", "Shows the server version as an integer."),
    ("standard_conforming_strings", "on", "Causes '...' strings to treat backslashes literally."),
    ("statement_timeout", "0", "Sets the maximum allowed duration of any statement."),
    ("TimeZone", "UTC", "Sets the time zone for displaying and interpreting time stamps."),
    ("transaction_isolation", "repeatable read", "Sets the current transaction's isolation level."),
    ("transaction_read_only", "off", "Sets the current transaction's read-only status."),
];

/// A setting's default value, by name (case-insensitive).
pub fn setting(name: &str) -> Option<&'static str> {
    SETTINGS.iter().find(|(n, _, _)| n.eq_ignore_ascii_case(name)).map(|(_, value, _)| *value)
}

fn settings_rows(schema: &SchemaRef) -> DfResult<RecordBatch> {
    let mut rows = Rows::new(schema, SETTINGS.len());
    rows.text("name", SETTINGS.iter().map(|s| s.0))
        .text("setting", SETTINGS.iter().map(|s| s.1))
        .text("short_desc", SETTINGS.iter().map(|s| s.2))
        .text("context", SETTINGS.iter().map(|_| "user"))
        .text("vartype", SETTINGS.iter().map(|_| "string"))
        .text("source", SETTINGS.iter().map(|_| "default"))
        .text("boot_val", SETTINGS.iter().map(|s| s.1))
        .text("reset_val", SETTINGS.iter().map(|s| s.1))
        .flag("pending_restart", SETTINGS.iter().map(|_| false));
    rows.finish()
}

#[async_trait]
impl SchemaProvider for PgCatalog {
    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let lower = name.to_ascii_lowercase();
        match OWN_TABLES.iter().find(|t| **t == lower) {
            Some(&table) => Ok(Some(Arc::new(ComputedTable(LiveTable { table, catalog: self.clone_handle() })))),
            None => self.inner.table(name).await,
        }
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
    }
}

impl PgCatalog {
    fn clone_handle(&self) -> Arc<PgCatalog> {
        Arc::new(PgCatalog {
            inner: self.inner.clone(),
            catalogs: self.catalogs.clone(),
            catalog: self.catalog.clone(),
            schemas: self.schemas.clone(),
        })
    }
}

/// One of [`OWN_TABLES`], computed when scanned.
#[derive(Debug)]
struct LiveTable {
    table: &'static str,
    catalog: Arc<PgCatalog>,
}

#[async_trait]
impl ComputedRows for LiveTable {
    fn schema(&self) -> SchemaRef {
        self.catalog.schemas.get(self.table).cloned().unwrap_or_else(|| Arc::new(Schema::empty()))
    }
    async fn rows(&self) -> DfResult<RecordBatch> {
        self.catalog.rows(self.table).await
    }
}
