//! What a Postgres client sees of the database itself: the system catalogs,
//! Postgres's functions, and the rewrites that let clients' own catalog
//! queries run. psql's `\d`, drivers' metadata calls, ORMs' reflection and
//! BI tools' schema browsers all read these literally.
//!
//! - `tables.rs`: `pg_catalog`'s relation tables (`pg_class`,
//!   `pg_attribute`, `pg_index`, …) computed from Freshet's catalog, in
//!   place of datafusion-pg-catalog's, with stable OIDs;
//! - `information_schema.rs`: `columns` and the key tables in Postgres's
//!   layout;
//! - `freshet_catalog.rs`: Freshet's own tables (watermarks, views' late
//!   rows and sources, state sizes, bad records, sinks, storage, lineage);
//! - `computed_table.rs`: a table computed when scanned, which all of the
//!   above are;
//! - `functions.rs`, `format.rs`: Postgres functions that need the catalog
//!   (`obj_description`, `pg_get_viewdef`, `current_setting`, …) and
//!   `format()`;
//! - `compat.rs`: Postgres expressions DataFusion cannot plan, rewritten
//!   in the text before it sees them;
//! - `names.rs`: how Postgres reads a written name (quotes, dots, case).
//!
//! This module reads the catalog and the coordinator and is installed by
//! the SQL layer ([`install`]); nothing below it depends on it.

use std::sync::Arc;

use datafusion::prelude::SessionContext;

use crate::catalog::Catalog;
use crate::db::coordinator::Coordinator;
use crate::error::{Result, SqlError};

pub mod compat;
pub mod computed_table;
mod format;
pub mod freshet_catalog;
pub mod functions;
pub mod information_schema;
pub mod names;
pub mod tables;

/// Sets up `pg_catalog` (datafusion-pg-catalog's fixed tables and functions,
/// with Freshet's relation tables in place of its own), `information_schema`,
/// `freshet_catalog` and the catalog functions, in `database` of `ctx`.
pub fn install(
    ctx: &SessionContext,
    database: &str,
    catalog: &Arc<Catalog>,
    coordinator: &Arc<Coordinator>,
) -> Result<()> {
    datafusion_postgres::datafusion_pg_catalog::pg_catalog::setup_pg_catalog(
        ctx,
        database,
        datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider,
    )
    .map_err(|e| SqlError::internal(format!("setting up pg_catalog: {e}")))?;
    let schemas = ctx.catalog(database).ok_or_else(|| SqlError::internal(format!("catalog {database} is missing")))?;
    let inner = schemas.schema("pg_catalog").ok_or_else(|| SqlError::internal("pg_catalog is missing"))?;
    // Reading the crate's table schemas is synchronous work behind an
    // async signature: nothing here waits on I/O.
    let wrapped = futures::executor::block_on(tables::PgCatalog::new(
        inner,
        ctx.state().catalog_list().clone(),
        catalog.clone(),
    ))?;
    schemas.register_schema("pg_catalog", Arc::new(wrapped))?;
    // information_schema in Postgres's layout where clients read it
    // (DataFusion's own is switched off).
    let information_schema =
        information_schema::InformationSchema::new(ctx.state().catalog_list().clone(), catalog.clone());
    schemas.register_schema("information_schema", Arc::new(information_schema))?;
    functions::register(ctx, catalog);
    ctx.register_udf(format::Format::udf());
    freshet_catalog::register(ctx, database, catalog.clone(), coordinator.clone())
}
