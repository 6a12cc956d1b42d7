//! A SQL session over a Firn server.
//!
//! Statements run one at a time. Queries are planned by DataFusion against the
//! [`FirnCatalog`] (tables resolved to their current snapshot when the statement is
//! planned, versioned tables to the snapshot they name); writes, DDL and procedures are
//! carried out through the Firn server. A statement that fails leaves every table as it
//! was: nothing is committed until its one commit succeeds.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::context::SessionState;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{ObjectType, Statement};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer, Word};
use firn_client::FirnClient;
use futures::TryStreamExt;

use crate::catalog::FirnCatalog;
use crate::error::{QueryError, Result};
use crate::travel::{FirnDialect, TimeTravelPlanner, Versions, rewrite_version_refs};
use crate::{CATALOG, DEFAULT_SCHEMA, ddl, procedures};

/// Deepest nesting of expressions a statement may have. The parser builds chains such as
/// `1+1+...+1` without recursing, but planning, visiting and dropping them recurses once a
/// level: far deeper than this would overflow the stack instead of failing cleanly.
pub const MAX_EXPR_DEPTH: usize = 256;

/// The parser thread's stack: room to check and drop any statement it can build.
const PARSE_STACK_BYTES: usize = 256 << 20;

/// Refuses a statement whose expressions nest deeper than [`MAX_EXPR_DEPTH`] (on the parser
/// thread, which has room to drop it).
fn check_depth(statement: Statement) -> Result<Statement> {
    use std::ops::ControlFlow;

    use datafusion::sql::sqlparser::ast::{Expr, Visit, Visitor};
    struct Depth(usize);
    impl Visitor for Depth {
        type Break = ();
        fn pre_visit_expr(&mut self, _: &Expr) -> ControlFlow<()> {
            self.0 += 1;
            if self.0 > MAX_EXPR_DEPTH {
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
        fn post_visit_expr(&mut self, _: &Expr) -> ControlFlow<()> {
            self.0 -= 1;
            ControlFlow::Continue(())
        }
    }
    if statement.visit(&mut Depth(0)).is_continue() {
        return Ok(statement);
    }
    Err(QueryError::Syntax(format!(
        "expressions nest deeper than {MAX_EXPR_DEPTH} levels; simplify the statement"
    )))
}

/// One parsed statement.
#[derive(Debug, Clone)]
pub struct ParsedStatement {
    pub statement: Statement,
    /// `PARTITIONED BY (...)` of a CREATE TABLE, in Firn's partition notation.
    pub partition_by: Option<String>,
    /// The statement's text as written.
    pub text: String,
}

/// What a statement produced.
pub enum Output {
    /// Rows (a query, or the row count of an INSERT).
    Rows(SendableRecordBatchStream),
    /// A statement without rows: what it did.
    Done(String),
}

impl Output {
    /// Rows from one batch.
    pub fn batch(batch: RecordBatch) -> Self {
        Output::Rows(Box::pin(
            datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(
                batch.schema(),
                futures::stream::iter([Ok(batch)]),
            ),
        ))
    }

    /// All rows (a `Done` output has none).
    pub async fn collect(self) -> Result<Vec<RecordBatch>> {
        match self {
            Output::Rows(s) => Ok(s.try_collect().await?),
            Output::Done(_) => Ok(Vec::new()),
        }
    }
}

/// A SQL session. Cheap to clone.
#[derive(Clone)]
pub struct FirnSession {
    ctx: SessionContext,
    client: FirnClient,
    catalog: Arc<FirnCatalog>,
    versions: Versions,
    /// Clones share the per-statement planning state: one statement is planned at a time.
    planning: Arc<tokio::sync::Mutex<()>>,
}

impl FirnSession {
    /// Connects to a Firn server (e.g. `http://127.0.0.1:50051`).
    pub async fn connect(endpoint: &str) -> Result<Self> {
        let client = FirnClient::connect(endpoint)
            .await?
            .with_client_name("firn-sql");
        Ok(Self::new(client))
    }

    pub fn new(client: FirnClient) -> Self {
        let config = SessionConfig::new()
            .with_default_catalog_and_schema(CATALOG, DEFAULT_SCHEMA)
            .with_create_default_catalog_and_schema(false)
            .with_information_schema(true);
        let versions = Versions::default();
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_default_features()
            .with_relation_planners(vec![Arc::new(TimeTravelPlanner {
                versions: versions.clone(),
            })])
            .build();
        let ctx = SessionContext::new_with_state(state);
        let catalog = Arc::new(FirnCatalog::new(client.clone(), versions.clone()));
        ctx.register_catalog(CATALOG, catalog.clone());
        Self {
            ctx,
            client,
            catalog,
            versions,
            planning: Arc::default(),
        }
    }

    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    pub fn client(&self) -> &FirnClient {
        &self.client
    }

    /// The file filter of a SQL `predicate` on `table`, for commands that select files
    /// (`firn compact --where`): the parts of the predicate that can prune files, so it
    /// selects every file that may hold a matching row (possibly more).
    pub async fn file_filter(
        &self,
        table: &str,
        predicate: &str,
    ) -> Result<firn_client::proto::Filter> {
        use datafusion::logical_expr::{LogicalPlan, utils::split_conjunction};
        let plan = self
            .ctx
            .sql(&format!("SELECT * FROM {table} WHERE {predicate}"))
            .await?
            .into_optimized_plan()?;
        let mut exprs = Vec::new();
        let mut stack = vec![&plan];
        while let Some(p) = stack.pop() {
            match p {
                LogicalPlan::Filter(f) => {
                    exprs.extend(split_conjunction(&f.predicate).into_iter().cloned())
                }
                LogicalPlan::TableScan(s) => exprs.extend(s.filters.iter().cloned()),
                _ => {}
            }
            stack.extend(p.inputs());
        }
        crate::filter::to_proto(&exprs).ok_or_else(|| {
            QueryError::Invalid(format!(
                "{predicate}: no part of it can select files (use comparisons of columns \
                 with constants)"
            ))
        })
    }

    /// Splits `sql` into statements and parses them. Runs on a thread with a large stack:
    /// checking how deep a statement nests recurses once a level (see [`MAX_EXPR_DEPTH`]).
    pub fn parse(&self, sql: &str) -> Result<Vec<ParsedStatement>> {
        std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("firn-sql-parse".into())
                .stack_size(PARSE_STACK_BYTES)
                .spawn_scoped(scope, || self.parse_here(sql))
                .map_err(|e| QueryError::Syntax(format!("cannot start the parser: {e}")))?
                .join()
                .unwrap_or_else(|_| Err(QueryError::Syntax("the parser failed".into())))
        })
    }

    fn parse_here(&self, sql: &str) -> Result<Vec<ParsedStatement>> {
        let dialect = FirnDialect::default();
        let tokens = Tokenizer::new(&dialect, sql)
            .tokenize_with_location()
            .map_err(|e| QueryError::Syntax(e.to_string()))?;
        let mut out = Vec::new();
        for segment in split_statements(tokens) {
            let text = segment
                .iter()
                .map(|t| t.token.to_string())
                .collect::<String>()
                .trim()
                .to_string();
            let (segment, partition_by) = extract_create_clauses(segment)?;
            let segment = rewrite_version_refs(segment);
            let mut parser = Parser::new(&dialect).with_tokens_with_locations(segment);
            let statement = parser.parse_statement()?;
            let statement = check_depth(statement)?;
            if parser.peek_token().token != Token::EOF {
                return Err(QueryError::Syntax(format!(
                    "unexpected {} after the end of the statement",
                    parser.peek_token().token
                )));
            }
            out.push(ParsedStatement {
                statement,
                partition_by,
                text,
            });
        }
        Ok(out)
    }

    /// Runs every statement of `sql`; returns the rows of the last one.
    pub async fn sql(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        let mut last = Vec::new();
        for s in self.parse(sql)? {
            last = self.run(s).await?.collect().await?;
        }
        Ok(last)
    }

    /// Runs one statement.
    pub async fn run(&self, s: ParsedStatement) -> Result<Output> {
        // Names of namespaces and tables, for statements that list them.
        if lists_tables(&s.statement) {
            self.catalog.refresh().await?;
        }
        match &s.statement {
            Statement::CreateTable(ct) => {
                ddl::create_table(self, ct, s.partition_by.as_deref()).await
            }
            Statement::Drop {
                object_type: ObjectType::Table,
                names,
                if_exists,
                ..
            } => ddl::drop_tables(self, names, *if_exists).await,
            Statement::CreateSchema {
                schema_name,
                if_not_exists,
                ..
            } => ddl::create_schema(self, schema_name, *if_not_exists).await,
            Statement::Drop {
                object_type: ObjectType::Schema,
                names,
                if_exists,
                cascade,
                ..
            } => ddl::drop_schemas(self, names, *if_exists, *cascade).await,
            Statement::Delete(d) => ddl::delete(self, d).await,
            Statement::Call(f) => procedures::call(self, f).await,
            _ => {
                if s.partition_by.is_some() {
                    return Err(QueryError::Unsupported(
                        "PARTITIONED BY belongs to CREATE TABLE".into(),
                    ));
                }
                let stream = self.query(s.statement).await?;
                Ok(Output::Rows(stream))
            }
        }
    }

    /// Plans and starts a statement DataFusion runs (queries, INSERT, EXPLAIN, SHOW).
    pub(crate) async fn query(&self, statement: Statement) -> Result<SendableRecordBatchStream> {
        let plan = self.plan(statement).await?;
        let df = self.ctx.execute_logical_plan(plan).await?;
        Ok(df.execute_stream().await?)
    }

    /// Plans a statement DataFusion runs, with its versioned tables resolved.
    pub async fn plan(
        &self,
        statement: Statement,
    ) -> Result<datafusion::logical_expr::LogicalPlan> {
        let _planning = self.planning.lock().await;
        self.versions
            .resolve(&self.ctx, &self.client, &statement)
            .await?;
        let state: SessionState = self.ctx.state();
        Ok(state
            .statement_to_plan(DFStatement::Statement(Box::new(statement)))
            .await?)
    }
}

/// Whether a statement reads the catalog's listing (`SHOW ...`, `information_schema`).
fn lists_tables(s: &Statement) -> bool {
    matches!(
        s,
        Statement::ShowTables { .. }
            | Statement::ShowSchemas { .. }
            | Statement::ShowColumns { .. }
            | Statement::ShowDatabases { .. }
    ) || s
        .to_string()
        .to_ascii_lowercase()
        .contains("information_schema")
}

/// Splits tokens into statements at top-level semicolons, dropping empty statements.
fn split_statements(tokens: Vec<TokenWithSpan>) -> Vec<Vec<TokenWithSpan>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut depth = 0i32;
    for t in tokens {
        match &t.token {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            Token::SemiColon if depth <= 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            Token::EOF => continue,
            _ => {}
        }
        cur.push(t);
    }
    out.push(cur);
    out.retain(|s| s.iter().any(|t| !matches!(t.token, Token::Whitespace(_))));
    out
}

fn is_kw(t: &Token, kw: Keyword) -> bool {
    matches!(t, Token::Word(Word { keyword, .. }) if *keyword == kw)
}

/// Takes Spark's `USING <format>` and `PARTITIONED BY (<transforms>)` out of a CREATE TABLE
/// (sqlparser accepts neither with transforms); returns the partition clause's text.
fn extract_create_clauses(
    tokens: Vec<TokenWithSpan>,
) -> Result<(Vec<TokenWithSpan>, Option<String>)> {
    let sig: Vec<usize> = (0..tokens.len())
        .filter(|&i| !matches!(tokens[i].token, Token::Whitespace(_)))
        .collect();
    let is_create_table = sig
        .first()
        .is_some_and(|&i| is_kw(&tokens[i].token, Keyword::CREATE))
        && sig
            .iter()
            .take(6)
            .any(|&i| is_kw(&tokens[i].token, Keyword::TABLE));
    if !is_create_table {
        return Ok((tokens, None));
    }
    let mut remove = vec![false; tokens.len()];
    let mut partition = None;
    let mut depth = 0i32;
    let mut k = 0;
    while k < sig.len() {
        let i = sig[k];
        match &tokens[i].token {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            t if depth == 0 && is_kw(t, Keyword::AS) => break, // the query of a CTAS
            t if depth == 0 && is_kw(t, Keyword::USING) && k + 1 < sig.len() => {
                let format = tokens[sig[k + 1]].token.to_string();
                if !format.eq_ignore_ascii_case("iceberg") {
                    return Err(QueryError::Unsupported(format!(
                        "USING {format}: Firn tables are Iceberg tables"
                    )));
                }
                remove[i] = true;
                remove[sig[k + 1]] = true;
                k += 2;
                continue;
            }
            t if depth == 0
                && is_kw(t, Keyword::PARTITIONED)
                && sig
                    .get(k + 1)
                    .is_some_and(|&j| is_kw(&tokens[j].token, Keyword::BY))
                && sig
                    .get(k + 2)
                    .is_some_and(|&j| tokens[j].token == Token::LParen) =>
            {
                let open = sig[k + 2];
                let mut d = 0;
                let mut close = None;
                for (j, t) in tokens.iter().enumerate().skip(open) {
                    match t.token {
                        Token::LParen => d += 1,
                        Token::RParen => {
                            d -= 1;
                            if d == 0 {
                                close = Some(j);
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                let close = close.ok_or_else(|| {
                    QueryError::Syntax("PARTITIONED BY ( lacks its closing )".into())
                })?;
                partition = Some(
                    tokens[open + 1..close]
                        .iter()
                        .map(|t| t.token.to_string())
                        .collect::<String>(),
                );
                for r in remove.iter_mut().take(close + 1).skip(i) {
                    *r = true;
                }
                while k < sig.len() && sig[k] <= close {
                    k += 1;
                }
                continue;
            }
            _ => {}
        }
        k += 1;
    }
    let kept = tokens
        .into_iter()
        .zip(remove)
        .filter(|(_, r)| !r)
        .map(|(t, _)| t)
        .collect();
    Ok((kept, partition))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(sql: &str) -> Vec<TokenWithSpan> {
        Tokenizer::new(&FirnDialect::default(), sql)
            .tokenize_with_location()
            .unwrap()
    }

    #[test]
    fn statements_split_at_top_level_semicolons_only() {
        let s = split_statements(tokens("select ';'; ; select (1);\n"));
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn spark_create_table_clauses_are_taken_out() {
        let (rest, p) = extract_create_clauses(tokens(
            "CREATE TABLE a.t (id bigint, ts timestamp) USING iceberg PARTITIONED BY (day(ts), bucket(4, id))",
        ))
        .unwrap();
        assert_eq!(p.as_deref(), Some("day(ts), bucket(4, id)"));
        let text: String = rest.iter().map(|t| t.token.to_string()).collect();
        assert_eq!(text.trim(), "CREATE TABLE a.t (id bigint, ts timestamp)");
        let (_, p) = extract_create_clauses(tokens(
            "CREATE TABLE a.t PARTITIONED BY (x) AS SELECT 1 AS x",
        ))
        .unwrap();
        assert_eq!(p.as_deref(), Some("x"));
        assert!(extract_create_clauses(tokens("CREATE TABLE a.t (x int) USING parquet")).is_err());
        let (_, p) = extract_create_clauses(tokens("SELECT 1 PARTITIONED")).unwrap();
        assert!(p.is_none());
    }
}
