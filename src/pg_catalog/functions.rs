//! Postgres's catalog functions that need Freshet's catalog, which psql
//! (`\d+`), drivers and BI tools call: `obj_description`,
//! `col_description`, `shobj_description`, `pg_get_viewdef`,
//! `pg_get_indexdef`, `pg_get_constraintdef`, `pg_get_userbyid`,
//! `pg_table_is_visible`, `pg_size_pretty`, `pg_table_size` and
//! `pg_indexes_size` (NULL: not tracked), `current_setting`,
//! `set_config`, `version`, `pg_type_is_visible`, `quote_literal` and
//! `pg_encoding_to_char`. (datafusion-pg-catalog
//! registers the rest, and placeholders for some of these, which ours
//! replace.) Relations are found from their OIDs alone (see
//! `tables.rs`).

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature, Volatility,
};
use datafusion::prelude::SessionContext;

use super::tables::{PG_CLASS_OID, relation_of_oid, role_of_oid, setting, view_definition, visible};
use crate::catalog::{Catalog, Relation};
use crate::error::{SqlError, sqlstate};

/// What Postgres's `version()` says, with what this is.
pub fn version_text() -> String {
    format!(
        "PostgreSQL 16.6 (Freshet {}, a streaming database) on {}-linux, 64-bit",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::ARCH
    )
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Function {
    ObjDescription,
    ColDescription,
    ShobjDescription,
    ViewDef,
    IndexDef,
    ConstraintDef,
    UserById,
    CurrentSetting,
    SetConfig,
    Version,
    TableIsVisible,
    SizePretty,
    TableSize,
    IndexesSize,
    TypeIsVisible,
    QuoteLiteral,
    EncodingToChar,
    Regclass,
}

impl Function {
    const ALL: [Function; 18] = [
        Function::ObjDescription,
        Function::ColDescription,
        Function::ShobjDescription,
        Function::ViewDef,
        Function::IndexDef,
        Function::ConstraintDef,
        Function::UserById,
        Function::CurrentSetting,
        Function::SetConfig,
        Function::Version,
        Function::TableIsVisible,
        Function::SizePretty,
        Function::TableSize,
        Function::IndexesSize,
        Function::TypeIsVisible,
        Function::QuoteLiteral,
        Function::EncodingToChar,
        Function::Regclass,
    ];

    fn name(self) -> &'static str {
        match self {
            Function::ObjDescription => "obj_description",
            Function::ColDescription => "col_description",
            Function::ShobjDescription => "shobj_description",
            Function::ViewDef => "pg_get_viewdef",
            Function::IndexDef => "pg_get_indexdef",
            Function::ConstraintDef => "pg_get_constraintdef",
            Function::UserById => "pg_get_userbyid",
            Function::CurrentSetting => "current_setting",
            Function::SetConfig => "set_config",
            Function::Version => "version",
            Function::TableIsVisible => "pg_table_is_visible",
            Function::SizePretty => "pg_size_pretty",
            Function::TableSize => "pg_table_size",
            Function::IndexesSize => "pg_indexes_size",
            Function::TypeIsVisible => "pg_type_is_visible",
            Function::QuoteLiteral => "quote_literal",
            Function::EncodingToChar => "pg_encoding_to_char",
            Function::Regclass => super::compat::REGCLASS_FUNCTION,
        }
    }

    fn return_type(self) -> DataType {
        match self {
            Function::TableIsVisible | Function::TypeIsVisible => DataType::Boolean,
            Function::TableSize | Function::IndexesSize | Function::Regclass => DataType::Int64,
            _ => DataType::Utf8,
        }
    }

    /// How many arguments it takes.
    fn arities(self) -> &'static [usize] {
        match self {
            Function::ObjDescription => &[1, 2],
            Function::ColDescription | Function::ShobjDescription => &[2],
            Function::ViewDef | Function::ConstraintDef => &[1, 2],
            Function::IndexDef => &[1, 3],
            Function::UserById
            | Function::TableIsVisible
            | Function::SizePretty
            | Function::TableSize
            | Function::IndexesSize
            | Function::TypeIsVisible
            | Function::QuoteLiteral
            | Function::EncodingToChar
            | Function::Regclass => &[1],
            Function::CurrentSetting => &[1, 2],
            Function::SetConfig => &[3],
            Function::Version => &[0],
        }
    }
}

/// `pg_size_pretty`: bytes, kB, MB, … as Postgres rounds them (a unit
/// while the number is under 10240 of it, rounded half up).
fn size_pretty(bytes: i64) -> String {
    const UNITS: [&str; 5] = ["kB", "MB", "GB", "TB", "PB"];
    if bytes.abs() < 10 * 1024 {
        return format!("{bytes} bytes");
    }
    let mut size = bytes as f64;
    for unit in UNITS {
        size /= 1024.0;
        if size.abs() < 10.0 * 1024.0 - 0.5 || unit == "PB" {
            return format!("{} {unit}", size.round() as i64);
        }
    }
    format!("{bytes} bytes")
}

/// One of the functions, with the catalog it reads.
pub struct CatalogFunction {
    function: Function,
    signature: Signature,
    catalog: Arc<Catalog>,
}

impl std::fmt::Debug for CatalogFunction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CatalogFunction({})", self.function.name())
    }
}

impl PartialEq for CatalogFunction {
    fn eq(&self, other: &Self) -> bool {
        self.function == other.function
    }
}

impl Eq for CatalogFunction {}

impl Hash for CatalogFunction {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.function.hash(state);
    }
}

/// Registers every function (replacing placeholders of the same name).
pub fn register(ctx: &SessionContext, catalog: &Arc<Catalog>) {
    for function in Function::ALL {
        let signatures = function
            .arities()
            .iter()
            .map(|&n| if n == 0 { TypeSignature::Nullary } else { TypeSignature::Any(n) })
            .collect();
        let signature = Signature::one_of(signatures, Volatility::Stable);
        ctx.register_udf(ScalarUDF::new_from_impl(CatalogFunction { function, signature, catalog: catalog.clone() }));
    }
}

/// An argument as numbers or text, whatever type the caller passed
/// (oids arrive as integers, names as text, `'t'::regclass` as either).
struct Arg {
    numbers: Option<ArrayRef>,
    text: Option<ArrayRef>,
}

impl Arg {
    fn new(array: &ArrayRef) -> Self {
        let cast = |to: &DataType| datafusion::arrow::compute::cast(array, to).ok();
        Self { numbers: cast(&DataType::Int64), text: cast(&DataType::Utf8) }
    }

    fn number(&self, row: usize) -> Option<i64> {
        let numbers = self.numbers.as_ref()?.as_primitive_opt::<Int64Type>()?;
        numbers.is_valid(row).then(|| numbers.value(row))
    }

    fn text(&self, row: usize) -> Option<&str> {
        let text = self.text.as_ref()?.as_string_opt::<i32>()?;
        text.is_valid(row).then(|| text.value(row))
    }
}

impl CatalogFunction {
    fn relation(&self, oid: Option<i64>) -> Option<(Arc<Relation>, bool)> {
        let (id, index) = relation_of_oid(oid?)?;
        Some((self.catalog.get(id)?, index))
    }

    /// A relation named by an OID, or by a name (`pg_get_viewdef('v')`).
    fn relation_named(&self, arg: &Arg, row: usize) -> Option<(Arc<Relation>, bool)> {
        if let Some(found) = self.relation(arg.number(row)) {
            return Some(found);
        }
        let name = arg.text(row)?;
        let (schema, name) = name.rsplit_once('.').unwrap_or(("public", name));
        let qualified = crate::catalog::QualifiedName {
            schema: schema.trim_matches('"').to_string(),
            name: name.trim_matches('"').to_string(),
        };
        self.catalog.by_name(&qualified).map(|r| (r, false))
    }

    /// The OID a relation name (`orders`, `"My T"`, `public.orders`, a
    /// system catalog) casts to as `regclass`; 42P01 if there is none.
    fn regclass(&self, name: &str) -> Result<i64, SqlError> {
        let parts = super::names::split_name(name);
        let (schema, relation) = match parts.as_slice() {
            [relation] => (None, relation.as_str()),
            [schema, relation] => (Some(schema.as_str()), relation.as_str()),
            _ => return Err(SqlError::new(sqlstate::SYNTAX_ERROR, format!("invalid name syntax: \"{name}\""))),
        };
        if schema.is_none_or(|s| s == "pg_catalog")
            && let Some(oid) = super::compat::system_catalog_oid(relation)
        {
            return Ok(i64::from(oid));
        }
        let qualified = crate::catalog::QualifiedName {
            schema: schema.unwrap_or("public").to_string(),
            name: relation.to_string(),
        };
        match self.catalog.by_name(&qualified) {
            Some(found) => Ok(i64::from(super::tables::relation_oid(found.id))),
            None => Err(SqlError::new(sqlstate::UNDEFINED_TABLE, format!("relation \"{name}\" does not exist"))),
        }
    }

    fn row(&self, args: &[Arg], row: usize) -> Result<Option<String>, SqlError> {
        let arg = |i: usize| args.get(i);
        Ok(match self.function {
            Function::Version => Some(version_text()),
            Function::ObjDescription => {
                let catalog_ok = arg(1)
                    .and_then(|a| a.text(row))
                    .is_none_or(|c| c.eq_ignore_ascii_case("pg_class") || c == PG_CLASS_OID.to_string());
                match self.relation(arg(0).and_then(|a| a.number(row))) {
                    Some((relation, false)) if catalog_ok => relation.comments.lock().get(&0).cloned(),
                    _ => None,
                }
            }
            Function::ColDescription => {
                let column = arg(1).and_then(|a| a.number(row)).and_then(|c| i32::try_from(c).ok());
                match (self.relation(arg(0).and_then(|a| a.number(row))), column) {
                    (Some((relation, false)), Some(column)) if column > 0 => {
                        relation.comments.lock().get(&column).cloned()
                    }
                    _ => None,
                }
            }
            Function::ShobjDescription => None,
            Function::ViewDef => match arg(0).and_then(|a| self.relation_named(a, row)) {
                Some((relation, false)) => Some(view_definition(Some(&relation))),
                _ => None,
            },
            Function::IndexDef => {
                let Some((relation, true)) = self.relation(arg(0).and_then(|a| a.number(row))) else {
                    return Ok(None);
                };
                let columns: Vec<&str> =
                    relation.primary_key.iter().map(|&i| relation.schema.field(i).name().as_str()).collect();
                match arg(1).and_then(|a| a.number(row)).filter(|&n| n > 0) {
                    Some(n) => columns.get(n as usize - 1).map(|c| c.to_string()),
                    None => Some(format!(
                        "CREATE UNIQUE INDEX {}_pkey ON {} USING btree ({})",
                        relation.name.name,
                        relation.name,
                        columns.join(", ")
                    )),
                }
            }
            Function::ConstraintDef => {
                let oid = arg(0).and_then(|a| a.number(row));
                self.catalog
                    .list_all()
                    .into_iter()
                    .find(|r| !r.primary_key.is_empty() && Some(super::tables::pkey_oid(r.id)) == oid)
                    .map(|r| {
                        let columns: Vec<&str> =
                            r.primary_key.iter().map(|&i| r.schema.field(i).name().as_str()).collect();
                        format!("PRIMARY KEY ({})", columns.join(", "))
                    })
            }
            // Postgres prints an unknown OID as "unknown (OID=n)".
            Function::UserById => arg(0)
                .and_then(|a| a.number(row))
                .map(|oid| role_of_oid(oid, &self.catalog).unwrap_or_else(|| format!("unknown (OID={oid})"))),
            Function::SizePretty => arg(0).and_then(|a| a.number(row)).map(size_pretty),
            // Sizes on disk are not tracked per relation (RocksDB shares
            // files between them): unknown rather than a made-up number.
            Function::TableSize | Function::IndexesSize => None,
            Function::TableIsVisible => {
                arg(0).and_then(|a| a.number(row)).map(|oid| visible(oid, &self.catalog).to_string())
            }
            Function::CurrentSetting => {
                let Some(name) = arg(0).and_then(|a| a.text(row)) else { return Ok(None) };
                let missing_ok = arg(1).and_then(|a| a.text(row)).is_some_and(|t| t == "true" || t == "t");
                match setting(name) {
                    Some(value) => Some(value.to_string()),
                    None if missing_ok => None,
                    None => {
                        return Err(SqlError::new(
                            sqlstate::UNDEFINED_OBJECT,
                            format!("unrecognized configuration parameter \"{name}\""),
                        ));
                    }
                }
            }
            // Every type lives in pg_catalog, which is on every search path.
            Function::TypeIsVisible => arg(0).and_then(|a| a.number(row)).map(|_| "true".to_string()),
            Function::QuoteLiteral => arg(0).and_then(|a| a.text(row)).map(super::format::quote_literal),
            // The one encoding there is (Postgres's number 6).
            Function::EncodingToChar => arg(0).and_then(|a| a.number(row)).map(|code| match code {
                6 => "UTF8".to_string(),
                0 => "SQL_ASCII".to_string(),
                _ => String::new(),
            }),
            Function::Regclass => match arg(0).and_then(|a| a.text(row)) {
                None => None,
                Some(name) => Some(self.regclass(name)?.to_string()),
            },
            // Settings are per connection and set with SET; set_config
            // answers as Postgres does without keeping the value.
            Function::SetConfig => arg(1).and_then(|a| a.text(row)).map(str::to_string),
        })
    }
}

impl ScalarUDFImpl for CatalogFunction {
    fn name(&self) -> &str {
        self.function.name()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(self.function.return_type())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let rows = args.number_rows;
        let scalar = args.args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let parsed: Vec<Arg> = arrays.iter().map(Arg::new).collect();
        let count = if arrays.is_empty() { 1 } else { rows };
        let mut out = StringBuilder::with_capacity(count, 16 * count);
        for row in 0..count {
            match self.row(&parsed, row).map_err(SqlError::into_datafusion)? {
                Some(text) => out.append_value(text),
                None => out.append_null(),
            }
        }
        let text: ArrayRef = Arc::new(out.finish());
        let array = datafusion::arrow::compute::cast(&text, &self.function.return_type())?;
        if scalar {
            Ok(ColumnarValue::Scalar(datafusion::common::ScalarValue::try_from_array(&array, 0)?))
        } else if array.len() == rows {
            Ok(ColumnarValue::Array(array))
        } else {
            Err(DataFusionError::Internal(format!("{} made {} rows of {rows}", self.name(), array.len())))
        }
    }
}
