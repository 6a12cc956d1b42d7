//! Time travel in SQL, Spark-compatible and never silently ignored.
//!
//! ```sql
//! SELECT * FROM ns.t VERSION AS OF 123;            -- a snapshot id
//! SELECT * FROM ns.t VERSION AS OF 'v1';           -- a tag or branch (or an id in quotes)
//! SELECT * FROM ns.t TIMESTAMP AS OF '2026-11-22 10:00:00';   -- UTC
//! SELECT * FROM ns.t FOR SYSTEM_TIME AS OF '2026-11-22 10:00:00';
//! ```
//!
//! DataFusion parses but ignores version clauses (it would return current data), so
//! statements are parsed with [`FirnDialect`], every versioned table is resolved to its
//! snapshot before planning ([`Versions::resolve`]), and [`TimeTravelPlanner`] turns each
//! versioned table factor into a scan pinned to that snapshot. A version clause it cannot
//! honour is an error, never ignored.

use std::any::TypeId;
use std::collections::{HashMap, HashSet};
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};

use datafusion::common::{DataFusionError, Result as DfResult, TableReference};
use datafusion::datasource::provider_as_source;
use datafusion::logical_expr::LogicalPlanBuilder;
use datafusion::logical_expr::planner::{
    PlannedRelation, RelationPlanner, RelationPlannerContext, RelationPlanning,
};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{
    Expr as SqlExpr, FunctionArg, FunctionArgExpr, FunctionArguments, ObjectName, Statement,
    TableFactor, TableVersion, Value, Visit, Visitor,
};
use datafusion::sql::sqlparser::dialect::{Dialect, GenericDialect};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Word};
use firn_client::{FirnClient, TableIdent, proto as pb};

use crate::error::{QueryError, Result};
use crate::table::FirnTable;

/// The marker function a quoted `VERSION AS OF 'name'` is rewritten to (sqlparser only
/// accepts a number there).
const REF_MARKER: &str = "__firn_version_ref";

/// DataFusion's generic SQL dialect with table versioning (`AS OF`) switched on.
#[derive(Debug, Default)]
pub struct FirnDialect(GenericDialect);

macro_rules! delegate {
    ($($name:ident)*) => {
        $(fn $name(&self) -> bool { self.0.$name() })*
    };
}

impl Dialect for FirnDialect {
    fn dialect(&self) -> TypeId {
        // The parser asks "is this the generic dialect?" for many features: yes.
        TypeId::of::<GenericDialect>()
    }
    fn is_delimited_identifier_start(&self, ch: char) -> bool {
        self.0.is_delimited_identifier_start(ch)
    }
    fn is_identifier_start(&self, ch: char) -> bool {
        self.0.is_identifier_start(ch)
    }
    fn is_identifier_part(&self, ch: char) -> bool {
        self.0.is_identifier_part(ch)
    }
    fn supports_table_versioning(&self) -> bool {
        true
    }
    delegate!(supports_unicode_string_literal supports_group_by_expr
        supports_group_by_with_modifier supports_left_associative_joins_without_parens
        supports_connect_by supports_match_recognize supports_pipe_operator
        supports_start_transaction_modifier supports_window_function_null_treatment_arg
        supports_dictionary_syntax supports_window_clause_named_window_reference
        supports_parenthesized_set_variables supports_select_wildcard_except
        support_map_literal_syntax allow_extract_custom allow_extract_single_quotes
        supports_extract_comma_syntax supports_create_view_comment_syntax
        supports_parens_around_table_factor supports_values_as_table_factor
        supports_create_index_with_clause supports_explain_with_utility_options
        supports_limit_comma supports_from_first_select supports_projection_trailing_commas
        supports_asc_desc_in_column_definition supports_try_convert
        supports_bitwise_shift_operators supports_comment_on supports_load_extension
        supports_named_fn_args_with_assignment_operator supports_struct_literal
        supports_empty_projections supports_nested_comments supports_multiline_comment_hints
        supports_user_host_grantee supports_string_escape_constant
        supports_array_typedef_with_brackets supports_match_against supports_set_names
        supports_comma_separated_set_assignments supports_filter_during_aggregation
        supports_select_wildcard_exclude supports_data_type_signed_suffix
        supports_interval_options supports_quote_delimited_string supports_lambda_functions
        supports_select_wildcard_replace supports_select_wildcard_ilike
        supports_select_wildcard_rename supports_optimize_table supports_install
        supports_detach supports_prewhere supports_with_fill supports_limit_by
        supports_interpolate supports_settings supports_select_format
        supports_comment_optimizer_hint supports_constraint_keyword_without_name);
}

fn is_kw(t: &Token, kw: Keyword) -> bool {
    matches!(t, Token::Word(Word { keyword, .. }) if *keyword == kw)
}

/// Rewrites `VERSION AS OF 'name'` to a form sqlparser accepts (see [`REF_MARKER`]).
pub(crate) fn rewrite_version_refs(tokens: Vec<TokenWithSpan>) -> Vec<TokenWithSpan> {
    let mut out: Vec<TokenWithSpan> = Vec::with_capacity(tokens.len());
    let mut i = 0;
    let significant: Vec<usize> = (0..tokens.len())
        .filter(|&i| !matches!(tokens[i].token, Token::Whitespace(_)))
        .collect();
    let mut rewrite_at: HashMap<usize, usize> = HashMap::new();
    for w in significant.windows(4) {
        let [a, b, c, d] = [w[0], w[1], w[2], w[3]];
        if is_kw(&tokens[a].token, Keyword::VERSION)
            && is_kw(&tokens[b].token, Keyword::AS)
            && is_kw(&tokens[c].token, Keyword::OF)
            && matches!(tokens[d].token, Token::SingleQuotedString(_))
        {
            rewrite_at.insert(a, d);
        }
    }
    while i < tokens.len() {
        if let Some(&end) = rewrite_at.get(&i) {
            let span = tokens[i].span;
            let Token::SingleQuotedString(s) = &tokens[end].token else {
                unreachable!("checked above")
            };
            let word = |w: &str| TokenWithSpan::new(Token::make_word(w, None), span);
            let ws = || {
                TokenWithSpan::new(
                    Token::Whitespace(datafusion::sql::sqlparser::tokenizer::Whitespace::Space),
                    span,
                )
            };
            out.extend([
                word("FOR"),
                ws(),
                word("SYSTEM_TIME"),
                ws(),
                word("AS"),
                ws(),
                word("OF"),
                ws(),
                word(REF_MARKER),
                TokenWithSpan::new(Token::LParen, span),
                TokenWithSpan::new(Token::SingleQuotedString(s.clone()), span),
                TokenWithSpan::new(Token::RParen, span),
            ]);
            i = end + 1;
        } else {
            out.push(tokens[i].clone());
            i += 1;
        }
    }
    out
}

/// What a version clause asks for, before resolution.
#[derive(Debug, Clone, PartialEq)]
enum Wanted {
    Id(i64),
    /// A ref name, or a snapshot id in quotes.
    RefOrId(String),
    /// A timestamp expression (SQL text).
    Timestamp(String),
}

/// The SQL form of a clause as the user wrote it (for messages).
fn describe(v: &TableVersion) -> String {
    match v {
        TableVersion::ForSystemTimeAsOf(e) => match marker_arg(e) {
            Some(s) => format!("VERSION AS OF '{s}'"),
            None => v.to_string(),
        },
        _ => v.to_string(),
    }
}

fn marker_arg(e: &SqlExpr) -> Option<String> {
    let SqlExpr::Function(f) = e else { return None };
    if f.name.to_string() != REF_MARKER {
        return None;
    }
    let FunctionArguments::List(l) = &f.args else {
        return None;
    };
    match l.args.as_slice() {
        [FunctionArg::Unnamed(FunctionArgExpr::Expr(SqlExpr::Value(v)))] => match &v.value {
            Value::SingleQuotedString(s) => Some(s.clone()),
            _ => None,
        },
        _ => None,
    }
}

fn wanted(v: &TableVersion) -> Result<Wanted> {
    match v {
        TableVersion::VersionAsOf(SqlExpr::Value(val)) => match &val.value {
            Value::Number(n, _) => n.parse::<i64>().map(Wanted::Id).map_err(|_| {
                QueryError::Invalid(format!(
                    "VERSION AS OF {n}: a snapshot id is a 64-bit integer"
                ))
            }),
            other => Err(QueryError::Invalid(format!(
                "VERSION AS OF {other}: expected a snapshot id or a quoted tag or branch name"
            ))),
        },
        TableVersion::ForSystemTimeAsOf(e) => Ok(match marker_arg(e) {
            Some(s) => Wanted::RefOrId(s),
            None => Wanted::Timestamp(e.to_string()),
        }),
        TableVersion::TimestampAsOf(e) => Ok(Wanted::Timestamp(e.to_string())),
        other => Err(QueryError::Unsupported(format!(
            "{other}: use VERSION AS OF, TIMESTAMP AS OF or FOR SYSTEM_TIME AS OF"
        ))),
    }
}

/// Key of a versioned table reference: the table and the clause.
type Key = (String, String);

/// Versioned tables of the statement being planned, resolved to snapshot-pinned tables.
#[derive(Debug, Default, Clone)]
pub struct Versions {
    resolved: Arc<Mutex<HashMap<Key, Arc<FirnTable>>>>,
    /// Tables the statement reads only at a version: their current state is not needed.
    versioned_only: Arc<Mutex<HashSet<TableIdent>>>,
}

/// Which Firn table a (normalised) SQL name refers to.
pub(crate) fn ident_of(r: &TableReference, default_schema: &str) -> Result<TableIdent> {
    let (schema, table) = match r {
        TableReference::Bare { table } => (default_schema.to_string(), table.to_string()),
        TableReference::Partial { schema, table } => (schema.to_string(), table.to_string()),
        TableReference::Full {
            catalog,
            schema,
            table,
        } => {
            if catalog.as_ref() != crate::CATALOG {
                return Err(QueryError::Invalid(format!(
                    "{r}: unknown catalog {catalog}; Firn tables are in catalog {}",
                    crate::CATALOG
                )));
            }
            (schema.to_string(), table.to_string())
        }
    };
    Ok(TableIdent::new(schema, table))
}

impl Versions {
    /// Resolves every versioned table of `stmt` (a statement of the session `ctx`).
    pub(crate) async fn resolve(
        &self,
        ctx: &SessionContext,
        client: &FirnClient,
        stmt: &Statement,
    ) -> Result<()> {
        /// Versioned table factors, and every relation name (tables read or written).
        struct Collect(Vec<(ObjectName, TableVersion)>, Vec<ObjectName>);
        impl Visitor for Collect {
            type Break = ();
            fn pre_visit_table_factor(&mut self, t: &TableFactor) -> ControlFlow<()> {
                if let TableFactor::Table {
                    name,
                    version: Some(v),
                    ..
                } = t
                {
                    self.0.push((name.clone(), v.clone()));
                }
                ControlFlow::Continue(())
            }
            fn pre_visit_relation(&mut self, r: &ObjectName) -> ControlFlow<()> {
                self.1.push(r.clone());
                ControlFlow::Continue(())
            }
        }
        let mut c = Collect(Vec::new(), Vec::new());
        let _ = stmt.visit(&mut c);
        let mut resolved = HashMap::new();
        let mut versioned: HashMap<TableIdent, usize> = HashMap::new();
        let (normalize, default_schema) = {
            let state = ctx.state();
            let o = state.config_options();
            (
                o.sql_parser.enable_ident_normalization,
                o.catalog.default_schema.clone(),
            )
        };
        for (name, version) in c.0 {
            let r =
                datafusion::sql::planner::object_name_to_table_reference(name.clone(), normalize)?;
            let key = (r.to_string(), version.to_string());
            let ident = ident_of(&r, &default_schema)?;
            *versioned.entry(ident.clone()).or_default() += 1;
            if resolved.contains_key(&key) {
                continue;
            }
            if ident.name.contains('$') {
                return Err(QueryError::Unsupported(format!(
                    "{r} {}: metadata tables describe the current state and cannot be time-travelled",
                    describe(&version)
                )));
            }
            let table = resolve_version(ctx, client, &ident, &version)
                .await
                .map_err(|e| match e {
                    QueryError::Server(s) => QueryError::Invalid(format!(
                        "{r} {}: {}",
                        describe(&version),
                        crate::error_message(&s)
                    )),
                    other => other,
                })?;
            resolved.insert(key, Arc::new(table));
        }
        // A table named more often than it is versioned is also read (or written) as it is.
        let mut named: HashMap<TableIdent, usize> = HashMap::new();
        for name in c.1 {
            let r = datafusion::sql::planner::object_name_to_table_reference(name, normalize)?;
            if let Ok(ident) = ident_of(&r, &default_schema) {
                *named.entry(ident).or_default() += 1;
            }
        }
        versioned.retain(|ident, n| named.get(ident).copied().unwrap_or(0) <= *n);
        let versioned: HashSet<TableIdent> = versioned.into_keys().collect();
        *self.resolved.lock().expect("poisoned") = resolved;
        *self.versioned_only.lock().expect("poisoned") = versioned;
        Ok(())
    }

    /// Whether the statement being planned reads `ident` only at past versions.
    pub(crate) fn versioned_only(&self, ident: &TableIdent) -> bool {
        self.versioned_only
            .lock()
            .expect("poisoned")
            .contains(ident)
    }

    fn get(&self, key: &Key) -> Option<Arc<FirnTable>> {
        self.resolved.lock().expect("poisoned").get(key).cloned()
    }
}

async fn resolve_version(
    ctx: &SessionContext,
    client: &FirnClient,
    ident: &TableIdent,
    version: &TableVersion,
) -> Result<FirnTable> {
    use pb::snapshot_selector::Kind;
    let sel = |kind| Some(pb::SnapshotSelector { kind: Some(kind) });
    match wanted(version)? {
        Wanted::Id(id) => FirnTable::resolve(client, ident, sel(Kind::SnapshotId(id))).await,
        Wanted::RefOrId(name) => {
            match FirnTable::resolve(client, ident, sel(Kind::Ref(name.clone()))).await {
                Err(QueryError::Server(e)) if crate::is_not_found(&e) => match name.parse() {
                    Ok(id) => FirnTable::resolve(client, ident, sel(Kind::SnapshotId(id))).await,
                    Err(_) => Err(QueryError::Server(e)),
                },
                other => other,
            }
        }
        Wanted::Timestamp(expr) => {
            let ms = eval_timestamp_ms(ctx, &expr).await?;
            FirnTable::resolve(client, ident, sel(Kind::AsOfTimestampMs(ms))).await
        }
    }
}

/// Evaluates a constant timestamp expression (UTC when it has no time zone).
pub(crate) async fn eval_timestamp_ms(ctx: &SessionContext, expr: &str) -> Result<i64> {
    use datafusion::arrow::array::{Array, TimestampMillisecondArray};
    let sql = format!("SELECT CAST(CAST(({expr}) AS TIMESTAMP) AS TIMESTAMP(3))");
    let bad = |why: String| QueryError::Invalid(format!("TIMESTAMP AS OF {expr}: {why}"));
    let batches = ctx
        .sql(&sql)
        .await
        .map_err(|e| bad(e.to_string()))?
        .collect()
        .await
        .map_err(|e| bad(e.to_string()))?;
    let col = batches
        .first()
        .map(|b| b.column(0).clone())
        .ok_or_else(|| bad("no value".into()))?;
    let arr = col
        .as_any()
        .downcast_ref::<TimestampMillisecondArray>()
        .ok_or_else(|| bad("not a timestamp".into()))?;
    if arr.is_empty() || arr.is_null(0) {
        return Err(bad("is NULL".into()));
    }
    Ok(arr.value(0))
}

/// Plans versioned table factors as scans of the snapshots [`Versions`] resolved.
#[derive(Debug)]
pub struct TimeTravelPlanner {
    pub(crate) versions: Versions,
}

impl RelationPlanner for TimeTravelPlanner {
    fn plan_relation(
        &self,
        relation: TableFactor,
        context: &mut dyn RelationPlannerContext,
    ) -> DfResult<RelationPlanning> {
        let TableFactor::Table {
            name,
            alias,
            version: Some(version),
            args,
            with_hints,
            partitions,
            json_path,
            sample,
            index_hints,
            with_ordinality,
        } = relation
        else {
            return Ok(RelationPlanning::Original(Box::new(relation)));
        };
        if args.is_some()
            || !with_hints.is_empty()
            || !partitions.is_empty()
            || json_path.is_some()
            || sample.is_some()
            || !index_hints.is_empty()
            || with_ordinality
        {
            return Err(DataFusionError::NotImplemented(format!(
                "{name} {}: time travel cannot be combined with other table modifiers",
                describe(&version)
            )));
        }
        let r = context.object_name_to_table_reference(name)?;
        let key = (r.to_string(), version.to_string());
        let table = self.versions.get(&key).ok_or_else(|| {
            DataFusionError::Plan(format!(
                "{r} {}: the version was not resolved before planning",
                describe(&version)
            ))
        })?;
        let plan = LogicalPlanBuilder::scan(r, provider_as_source(table), None)?.build()?;
        Ok(RelationPlanning::Planned(Box::new(PlannedRelation::new(
            plan, alias,
        ))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::parser::Parser;
    use datafusion::sql::sqlparser::tokenizer::Tokenizer;

    fn parse(sql: &str) -> Statement {
        let d = FirnDialect::default();
        let tokens = Tokenizer::new(&d, sql).tokenize_with_location().unwrap();
        let tokens = rewrite_version_refs(tokens);
        Parser::new(&d)
            .with_tokens_with_locations(tokens)
            .parse_statement()
            .unwrap()
    }

    fn version_of(stmt: &Statement) -> TableVersion {
        struct V(Option<TableVersion>);
        impl Visitor for V {
            type Break = ();
            fn pre_visit_table_factor(&mut self, t: &TableFactor) -> ControlFlow<()> {
                if let TableFactor::Table {
                    version: Some(v), ..
                } = t
                {
                    self.0 = Some(v.clone());
                }
                ControlFlow::Continue(())
            }
        }
        let mut v = V(None);
        let _ = stmt.visit(&mut v);
        v.0.expect("a version clause")
    }

    #[test]
    fn every_spark_form_parses_to_what_it_asks_for() {
        let w = |sql| wanted(&version_of(&parse(sql))).unwrap();
        assert_eq!(w("SELECT * FROM a.t VERSION AS OF 42"), Wanted::Id(42));
        assert_eq!(
            w("SELECT * FROM a.t VERSION AS OF 'v1' WHERE x = 1"),
            Wanted::RefOrId("v1".into())
        );
        assert_eq!(
            w("SELECT * FROM a.t TIMESTAMP AS OF '2026-11-22 10:00:00'"),
            Wanted::Timestamp("'2026-11-22 10:00:00'".into())
        );
        assert_eq!(
            w("SELECT * FROM a.t FOR SYSTEM_TIME AS OF '2026-11-22'"),
            Wanted::Timestamp("'2026-11-22'".into())
        );
        assert_eq!(
            describe(&version_of(&parse("SELECT * FROM a.t VERSION AS OF 'b'"))),
            "VERSION AS OF 'b'"
        );
        // Strings elsewhere are untouched.
        let s = parse("SELECT 'VERSION AS OF' FROM a.t VERSION AS OF 7");
        assert!(s.to_string().contains("'VERSION AS OF'"));
    }
}
