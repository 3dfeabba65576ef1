//! information_schema as Postgres lays it out where clients look closest:
//! `columns` with Postgres type names (`data_type`, `udt_name`,
//! precision and scale, nullability, defaults, identity and generation
//! flags), and `table_constraints` / `key_column_usage` for primary keys.
//! Every other table is DataFusion's (tables, views, schemata, …).
//!
//! DataFusion answers `information_schema.*` itself whenever its own
//! information schema is switched on, so the engine switches it off and
//! registers this provider under the name instead; this provider hands the
//! remaining tables to DataFusion's, which skips it when it lists schemas.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, Int32Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::catalog::information_schema::InformationSchemaProvider;
use datafusion::catalog::{CatalogProviderList, SchemaProvider, TableProvider};
use datafusion::datasource::MemTable;
use datafusion::error::Result as DfResult;
use pgwire::api::Type;

use crate::catalog::Catalog;

const OWN_TABLES: [&str; 3] = ["columns", "table_constraints", "key_column_usage"];

pub struct InformationSchema {
    inner: InformationSchemaProvider,
    catalogs: Arc<dyn CatalogProviderList>,
    catalog: Arc<Catalog>,
}

impl std::fmt::Debug for InformationSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InformationSchema")
    }
}

impl InformationSchema {
    pub fn new(catalogs: Arc<dyn CatalogProviderList>, catalog: Arc<Catalog>) -> Self {
        Self { inner: InformationSchemaProvider::new(catalogs.clone()), catalogs, catalog }
    }
}

/// Postgres's standard name for a type (`data_type`), from its `udt_name`.
fn standard_name(udt: &str) -> String {
    match udt {
        "int2" => "smallint",
        "int4" => "integer",
        "int8" => "bigint",
        "float4" => "real",
        "float8" => "double precision",
        "bool" => "boolean",
        "varchar" => "character varying",
        "bpchar" => "character",
        "timestamp" => "timestamp without time zone",
        "timestamptz" => "timestamp with time zone",
        "time" => "time without time zone",
        "timetz" => "time with time zone",
        array if array.starts_with('_') => "ARRAY",
        other => other,
    }
    .to_string()
}

/// One column's row: its Postgres type described the way
/// information_schema does.
struct ColumnRow {
    catalog: String,
    schema: String,
    table: String,
    name: String,
    position: i32,
    default: Option<String>,
    nullable: bool,
    data_type: DataType,
}

fn text(values: impl IntoIterator<Item = Option<String>>) -> ArrayRef {
    Arc::new(StringArray::from_iter(values))
}

fn int(values: impl IntoIterator<Item = Option<i32>>) -> ArrayRef {
    Arc::new(Int32Array::from_iter(values))
}

fn columns_batch(rows: &[ColumnRow]) -> DfResult<RecordBatch> {
    let names = [
        "table_catalog",
        "table_schema",
        "table_name",
        "column_name",
        "ordinal_position",
        "column_default",
        "is_nullable",
        "data_type",
        "character_maximum_length",
        "character_octet_length",
        "numeric_precision",
        "numeric_precision_radix",
        "numeric_scale",
        "datetime_precision",
        "interval_type",
        "udt_catalog",
        "udt_schema",
        "udt_name",
        "is_identity",
        "identity_generation",
        "is_generated",
        "generation_expression",
        "is_updatable",
    ];
    let int_columns = [
        "ordinal_position",
        "character_maximum_length",
        "character_octet_length",
        "numeric_precision",
        "numeric_precision_radix",
        "numeric_scale",
        "datetime_precision",
    ];
    let fields: Vec<Field> = names
        .iter()
        .map(|n| Field::new(*n, if int_columns.contains(n) { DataType::Int32 } else { DataType::Utf8 }, true))
        .collect();
    let udt = |r: &ColumnRow| -> String {
        arrow_pg::datatypes::into_pg_type(&r.data_type).unwrap_or(Type::TEXT).name().to_string()
    };
    let precision = |r: &ColumnRow| -> (Option<i32>, Option<i32>, Option<i32>) {
        match &r.data_type {
            DataType::Int16 => (Some(16), Some(2), Some(0)),
            DataType::Int32 => (Some(32), Some(2), Some(0)),
            DataType::Int64 => (Some(64), Some(2), Some(0)),
            DataType::Float32 => (Some(24), Some(2), None),
            DataType::Float64 => (Some(53), Some(2), None),
            DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => {
                (Some(i32::from(*p)), Some(10), Some(i32::from(*s)))
            }
            _ => (None, None, None),
        }
    };
    let datetime = |r: &ColumnRow| match &r.data_type {
        DataType::Timestamp(unit, _) | DataType::Time64(unit) => Some(match unit {
            datafusion::arrow::datatypes::TimeUnit::Second => 0,
            datafusion::arrow::datatypes::TimeUnit::Millisecond => 3,
            _ => 6,
        }),
        DataType::Date32 | DataType::Date64 => Some(0),
        _ => None,
    };
    let columns: Vec<ArrayRef> = vec![
        text(rows.iter().map(|r| Some(r.catalog.clone()))),
        text(rows.iter().map(|r| Some(r.schema.clone()))),
        text(rows.iter().map(|r| Some(r.table.clone()))),
        text(rows.iter().map(|r| Some(r.name.clone()))),
        int(rows.iter().map(|r| Some(r.position))),
        text(rows.iter().map(|r| r.default.clone())),
        text(rows.iter().map(|r| Some(if r.nullable { "YES" } else { "NO" }.to_string()))),
        text(rows.iter().map(|r| Some(standard_name(&udt(r))))),
        int(rows.iter().map(|_| None)),
        int(rows.iter().map(|r| matches!(r.data_type, DataType::Utf8 | DataType::LargeUtf8).then_some(1_073_741_824))),
        int(rows.iter().map(|r| precision(r).0)),
        int(rows.iter().map(|r| precision(r).1)),
        int(rows.iter().map(|r| precision(r).2)),
        int(rows.iter().map(datetime)),
        text(rows.iter().map(|_| None)),
        text(rows.iter().map(|r| Some(r.catalog.clone()))),
        text(rows.iter().map(|_| Some("pg_catalog".to_string()))),
        text(rows.iter().map(|r| Some(udt(r)))),
        text(rows.iter().map(|_| Some("NO".to_string()))),
        text(rows.iter().map(|_| None)),
        text(rows.iter().map(|_| Some("NEVER".to_string()))),
        text(rows.iter().map(|_| None)),
        text(rows.iter().map(|_| Some("YES".to_string()))),
    ];
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?)
}

impl InformationSchema {
    /// Every column of every relation outside pg_catalog and
    /// information_schema: Freshet's relations with their declared
    /// nullability and defaults, the system tables as DataFusion has them.
    async fn column_rows(&self) -> DfResult<Vec<ColumnRow>> {
        let mut rows = Vec::new();
        for catalog_name in self.catalogs.catalog_names() {
            let Some(catalog) = self.catalogs.catalog(&catalog_name) else { continue };
            for schema_name in catalog.schema_names() {
                if schema_name == "pg_catalog" || schema_name == "information_schema" {
                    continue;
                }
                let Some(schema) = catalog.schema(&schema_name) else { continue };
                let mut tables = schema.table_names();
                tables.sort();
                for table_name in tables {
                    let qualified =
                        crate::catalog::QualifiedName { schema: schema_name.clone(), name: table_name.clone() };
                    let relation = self.catalog.by_name(&qualified);
                    let arrow_schema = match &relation {
                        Some(relation) => relation.schema.clone(),
                        None => match schema.table(&table_name).await? {
                            Some(table) => table.schema(),
                            None => continue,
                        },
                    };
                    for (i, field) in arrow_schema.fields().iter().enumerate() {
                        let default =
                            relation.as_ref().and_then(|r| r.column_defaults.get(field.name())).map(|e| e.to_string());
                        rows.push(ColumnRow {
                            catalog: catalog_name.clone(),
                            schema: schema_name.clone(),
                            table: table_name.clone(),
                            name: field.name().clone(),
                            position: i as i32 + 1,
                            default,
                            nullable: field.is_nullable(),
                            data_type: field.data_type().clone(),
                        });
                    }
                }
            }
        }
        Ok(rows)
    }

    /// Primary keys: one constraint per keyed relation, and its columns.
    fn key_batches(&self) -> DfResult<(RecordBatch, RecordBatch)> {
        let keyed: Vec<_> = self.catalog.list_all().into_iter().filter(|r| !r.primary_key.is_empty()).collect();
        let database = crate::catalog::DATABASE.to_string();
        let constraint = |r: &crate::catalog::Relation| format!("{}_pkey", r.name.name);
        let strings =
            |names: &[&str]| -> Vec<Field> { names.iter().map(|n| Field::new(*n, DataType::Utf8, true)).collect() };
        let constraint_fields = strings(&[
            "constraint_catalog",
            "constraint_schema",
            "constraint_name",
            "table_catalog",
            "table_schema",
            "table_name",
            "constraint_type",
            "is_deferrable",
            "initially_deferred",
            "enforced",
            "nulls_distinct",
        ]);
        let each = |f: &dyn Fn(&crate::catalog::Relation) -> Option<String>| text(keyed.iter().map(|r| f(r)));
        let constraints = RecordBatch::try_new(
            Arc::new(Schema::new(constraint_fields)),
            vec![
                each(&|_| Some(database.clone())),
                each(&|r| Some(r.name.schema.clone())),
                each(&|r| Some(constraint(r))),
                each(&|_| Some(database.clone())),
                each(&|r| Some(r.name.schema.clone())),
                each(&|r| Some(r.name.name.clone())),
                each(&|_| Some("PRIMARY KEY".to_string())),
                each(&|_| Some("NO".to_string())),
                each(&|_| Some("NO".to_string())),
                each(&|_| Some("YES".to_string())),
                each(&|_| None),
            ],
        )?;
        let usage: Vec<(&crate::catalog::Relation, usize, usize)> = keyed
            .iter()
            .flat_map(|r| r.primary_key.iter().enumerate().map(move |(n, &column)| (r.as_ref(), n + 1, column)))
            .collect();
        let mut usage_fields = strings(&[
            "constraint_catalog",
            "constraint_schema",
            "constraint_name",
            "table_catalog",
            "table_schema",
            "table_name",
            "column_name",
        ]);
        usage_fields.push(Field::new("ordinal_position", DataType::Int32, true));
        usage_fields.push(Field::new("position_in_unique_constraint", DataType::Int32, true));
        let column =
            |f: &dyn Fn(&(&crate::catalog::Relation, usize, usize)) -> Option<String>| text(usage.iter().map(f));
        let key_usage = RecordBatch::try_new(
            Arc::new(Schema::new(usage_fields)),
            vec![
                column(&|_| Some(database.clone())),
                column(&|(r, _, _)| Some(r.name.schema.clone())),
                column(&|(r, _, _)| Some(constraint(r))),
                column(&|_| Some(database.clone())),
                column(&|(r, _, _)| Some(r.name.schema.clone())),
                column(&|(r, _, _)| Some(r.name.name.clone())),
                column(&|(r, _, c)| Some(r.schema.field(*c).name().clone())),
                int(usage.iter().map(|(_, n, _)| Some(*n as i32))),
                int(usage.iter().map(|_| None)),
            ],
        )?;
        Ok((constraints, key_usage))
    }
}

fn table(batch: RecordBatch) -> DfResult<Arc<dyn TableProvider>> {
    Ok(Arc::new(MemTable::try_new(batch.schema(), vec![vec![batch]])?))
}

#[async_trait]
impl SchemaProvider for InformationSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names = self.inner.table_names();
        for own in OWN_TABLES {
            if !names.iter().any(|n| n == own) {
                names.push(own.to_string());
            }
        }
        names
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        match name.to_ascii_lowercase().as_str() {
            "columns" => Ok(Some(table(columns_batch(&self.column_rows().await?)?)?)),
            "table_constraints" => Ok(Some(table(self.key_batches()?.0)?)),
            "key_column_usage" => Ok(Some(table(self.key_batches()?.1)?)),
            _ => self.inner.table(name).await,
        }
    }

    fn table_exist(&self, name: &str) -> bool {
        OWN_TABLES.contains(&name) || self.inner.table_exist(name)
    }
}
