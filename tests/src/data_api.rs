//! A fake Redshift Data API at the SDK boundary (aws-smithy-mocks): one stateful answerer for the five operations
//! pgshift calls, so that what a test asserts is what the code under test sent, not what a script of responses
//! handed back in call order.
//!
//! - `ExecuteStatement` and `BatchExecuteStatement` take a fresh id each (`s-1`, `s-2`, …) and record their SQL,
//!   database, cluster or workgroup, database user and secret; a submission a test refuses ([`DataApi::refuse`])
//!   gets no id.
//! - `DescribeStatement` answers by id from the statement's [`Script`], chosen when it was submitted by the first
//!   predicate over its SQL that matches ([`DataApi::script`]); the default finishes at the first describe. A batch
//!   reports its sub-statements `<id>:1` … `<id>:n`; a failed one names the failing sub-statement, its error and its
//!   Redshift query id, every other one ABORTED (the batch rolled back). A cancelled statement is ABORTED.
//! - `GetStatementResult` answers by id, only for a single statement that was seen FINISHED, with the rows of the
//!   first predicate over its SQL that matches ([`DataApi::answer`]); by default an empty warehouse: `SELECT 1` is 1,
//!   a count 0, a maximum NULL, any other query no rows.
//! - `CancelStatement` is recorded by id.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use aws_sdk_redshiftdata::error::ErrorMetadata;
use aws_sdk_redshiftdata::operation::batch_execute_statement::{
    BatchExecuteStatementError, BatchExecuteStatementInput, BatchExecuteStatementOutput,
};
use aws_sdk_redshiftdata::operation::cancel_statement::{
    CancelStatementError, CancelStatementInput, CancelStatementOutput,
};
use aws_sdk_redshiftdata::operation::describe_statement::{
    DescribeStatementError, DescribeStatementInput, DescribeStatementOutput,
};
use aws_sdk_redshiftdata::operation::execute_statement::{
    ExecuteStatementError, ExecuteStatementInput, ExecuteStatementOutput,
};
use aws_sdk_redshiftdata::operation::get_statement_result::{
    GetStatementResultError, GetStatementResultInput, GetStatementResultOutput,
};
use aws_sdk_redshiftdata::types::error::{ActiveSessionsExceededException, ValidationException};
use aws_sdk_redshiftdata::types::{Field, StatementStatusString, StatusString, SubStatementData};
use aws_sdk_redshiftdata::Client;
use aws_smithy_mocks::{mock, mock_client, MockResponse, RuleMode};

type SqlsPredicate = Box<dyn Fn(&[String]) -> bool + Send + Sync>;
type SqlPredicate = Box<dyn Fn(&str) -> bool + Send + Sync>;

/// Where a submission went, and as whom.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Target {
    pub cluster: Option<String>,
    pub workgroup: Option<String>,
    pub database: Option<String>,
    pub db_user: Option<String>,
    pub secret_arn: Option<String>,
}

/// One accepted `ExecuteStatement` (`batch: false`, one SQL) or `BatchExecuteStatement`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    pub id: String,
    pub sqls: Vec<String>,
    pub batch: bool,
    pub target: Target,
}

/// Every request the fake received, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Submit(Submitted),
    /// A submission refused by [`DataApi::refuse`].
    Refused {
        sqls: Vec<String>,
        message: String,
    },
    /// `status` is what was answered; `None` for an unknown id.
    Describe {
        id: String,
        status: Option<StatusString>,
    },
    Result {
        id: String,
    },
    Cancel {
        id: String,
    },
}

/// How a statement's describes go: STARTED for `running` describes, then its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    running: usize,
    end: End,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum End {
    Finished,
    /// The sub-statement at `step` (0-based; 0 for a single statement) failed.
    Failed {
        step: usize,
        error: String,
        query_id: i64,
    },
    /// Runs until cancelled.
    Never,
}

impl Script {
    /// FINISHED at the first describe.
    pub fn finished() -> Self {
        Self {
            running: 0,
            end: End::Finished,
        }
    }

    /// STARTED for `describes` describes, then FINISHED.
    pub fn running_for(describes: usize) -> Self {
        Self {
            running: describes,
            end: End::Finished,
        }
    }

    /// STARTED until cancelled.
    pub fn running() -> Self {
        Self {
            running: 0,
            end: End::Never,
        }
    }

    /// FAILED at the first describe: the statement at `step` (0-based) with `error` and Redshift query id `query_id`.
    pub fn fails_at(step: usize, error: &str, query_id: i64) -> Self {
        Self {
            running: 0,
            end: End::Failed {
                step,
                error: error.to_string(),
                query_id,
            },
        }
    }
}

/// What a refused submission is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `ValidationException` with this message.
    Invalid(String),
    /// `ActiveSessionsExceededException`: too many sessions at once.
    Busy,
}

struct Statement {
    submitted: Submitted,
    script: Script,
    describes: usize,
    last: Option<StatusString>,
    cancelled: bool,
}

#[derive(Default)]
struct State {
    statements: Vec<Statement>,
    requests: Vec<Request>,
    scripts: Vec<(SqlsPredicate, Script)>,
    answers: Vec<(SqlPredicate, Vec<Vec<Field>>)>,
    refusals: Vec<(SqlsPredicate, Refusal)>,
}

/// The fake Data API. Clones share one state; [`DataApi::client`] is an SDK client answered from it.
#[derive(Clone, Default)]
pub struct DataApi {
    state: Arc<Mutex<State>>,
}

impl DataApi {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Statements submitted from now on whose SQL matches `when` (the first such predicate wins) follow `script`.
    pub fn script(&self, when: impl Fn(&[String]) -> bool + Send + Sync + 'static, script: Script) {
        self.state().scripts.push((Box::new(when), script));
    }

    /// `GetStatementResult` of a statement whose SQL matches `when` (the first such predicate wins) returns `rows`.
    pub fn answer(&self, when: impl Fn(&str) -> bool + Send + Sync + 'static, rows: Vec<Vec<Field>>) {
        self.state().answers.push((Box::new(when), rows));
    }

    /// Submissions whose SQL matches `when` are refused with `refusal` (checked before any script; `when` is asked
    /// once per submission, in order).
    pub fn refuse(&self, when: impl Fn(&[String]) -> bool + Send + Sync + 'static, refusal: Refusal) {
        self.state().refusals.push((Box::new(when), refusal));
    }

    /// Every request, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.state().requests.clone()
    }

    /// Every accepted submission, in order.
    pub fn submitted(&self) -> Vec<Submitted> {
        self.state().statements.iter().map(|s| s.submitted.clone()).collect()
    }

    /// The accepted `BatchExecuteStatement`s, in order.
    pub fn batches(&self) -> Vec<Submitted> {
        self.submitted().into_iter().filter(|s| s.batch).collect()
    }

    /// Every SQL statement accepted, in order, batches flattened.
    pub fn statements(&self) -> Vec<String> {
        self.submitted().into_iter().flat_map(|s| s.sqls).collect()
    }

    /// The ids `CancelStatement` was called with, in order.
    pub fn cancelled(&self) -> Vec<String> {
        self.state()
            .requests
            .iter()
            .filter_map(|r| match r {
                Request::Cancel { id } => Some(id.clone()),
                _ => None,
            })
            .collect()
    }

    /// The statuses `DescribeStatement` answered for `id`, in order.
    pub fn answered(&self, id: &str) -> Vec<StatusString> {
        self.state()
            .requests
            .iter()
            .filter_map(|r| match r {
                Request::Describe { id: i, status: Some(s) } if i == id => Some(s.clone()),
                _ => None,
            })
            .collect()
    }

    /// How many times `id` was described.
    pub fn describes(&self, id: &str) -> usize {
        self.state()
            .statements
            .iter()
            .find(|s| s.submitted.id == id)
            .map_or(0, |s| s.describes)
    }

    /// An SDK client answered by this fake.
    pub fn client(&self) -> Client {
        let (a, b, c, d, e) = (self.clone(), self.clone(), self.clone(), self.clone(), self.clone());
        let execute = mock!(Client::execute_statement).then_compute_response(move |r| a.on_execute(r));
        let batch = mock!(Client::batch_execute_statement).then_compute_response(move |r| b.on_batch(r));
        let describe = mock!(Client::describe_statement).then_compute_response(move |r| c.on_describe(r));
        let result = mock!(Client::get_statement_result).then_compute_response(move |r| d.on_result(r));
        let cancel = mock!(Client::cancel_statement).then_compute_response(move |r| e.on_cancel(r));
        mock_client!(
            aws_sdk_redshiftdata,
            RuleMode::MatchAny,
            [&execute, &batch, &describe, &result, &cancel]
        )
    }

    /// Records a submission: its id, or the refusal it gets.
    fn submit(&self, sqls: Vec<String>, batch: bool, target: Target) -> Result<String, Refusal> {
        let mut s = self.state();
        if let Some(refusal) = s.refusals.iter().find(|(when, _)| when(&sqls)).map(|(_, r)| r.clone()) {
            let message = match &refusal {
                Refusal::Invalid(m) => m.clone(),
                Refusal::Busy => "Active sessions exceeded".to_string(),
            };
            s.requests.push(Request::Refused { sqls, message });
            return Err(refusal);
        }
        let script = s
            .scripts
            .iter()
            .find(|(when, _)| when(&sqls))
            .map_or_else(Script::finished, |(_, script)| script.clone());
        let id = format!("s-{}", s.statements.len() + 1);
        let submitted = Submitted {
            id: id.clone(),
            sqls,
            batch,
            target,
        };
        s.requests.push(Request::Submit(submitted.clone()));
        s.statements.push(Statement {
            submitted,
            script,
            describes: 0,
            last: None,
            cancelled: false,
        });
        Ok(id)
    }

    fn on_execute(&self, r: &ExecuteStatementInput) -> MockResponse<ExecuteStatementOutput, ExecuteStatementError> {
        let target = Target {
            cluster: r.cluster_identifier().map(str::to_string),
            workgroup: r.workgroup_name().map(str::to_string),
            database: r.database().map(str::to_string),
            db_user: r.db_user().map(str::to_string),
            secret_arn: r.secret_arn().map(str::to_string),
        };
        let sql = r.sql().unwrap_or_default().to_string();
        match self.submit(vec![sql], false, target) {
            Ok(id) => MockResponse::Output(ExecuteStatementOutput::builder().id(id).build()),
            Err(Refusal::Invalid(m)) => MockResponse::Error(ExecuteStatementError::ValidationException(invalid(&m))),
            Err(Refusal::Busy) => MockResponse::Error(ExecuteStatementError::ActiveSessionsExceededException(busy())),
        }
    }

    fn on_batch(
        &self,
        r: &BatchExecuteStatementInput,
    ) -> MockResponse<BatchExecuteStatementOutput, BatchExecuteStatementError> {
        let target = Target {
            cluster: r.cluster_identifier().map(str::to_string),
            workgroup: r.workgroup_name().map(str::to_string),
            database: r.database().map(str::to_string),
            db_user: r.db_user().map(str::to_string),
            secret_arn: r.secret_arn().map(str::to_string),
        };
        match self.submit(r.sqls().to_vec(), true, target) {
            Ok(id) => MockResponse::Output(BatchExecuteStatementOutput::builder().id(id).build()),
            Err(Refusal::Invalid(m)) => {
                MockResponse::Error(BatchExecuteStatementError::ValidationException(invalid(&m)))
            }
            Err(Refusal::Busy) => {
                MockResponse::Error(BatchExecuteStatementError::ActiveSessionsExceededException(busy()))
            }
        }
    }

    fn on_describe(&self, r: &DescribeStatementInput) -> MockResponse<DescribeStatementOutput, DescribeStatementError> {
        let id = r.id().unwrap_or_default().to_string();
        let mut s = self.state();
        let answer = s.statements.iter_mut().find(|st| st.submitted.id == id).map(|st| {
            let status = st.status();
            st.describes += 1;
            st.last = Some(status.clone());
            (status, described(st))
        });
        let status = answer.as_ref().map(|(status, _)| status.clone());
        s.requests.push(Request::Describe { id: id.clone(), status });
        match answer {
            Some((_, Ok(out))) => MockResponse::Output(out),
            Some((_, Err(e))) => MockResponse::Error(DescribeStatementError::ValidationException(invalid(&e))),
            None => MockResponse::Error(DescribeStatementError::ValidationException(invalid(&format!(
                "no statement {id}"
            )))),
        }
    }

    fn on_result(
        &self,
        r: &GetStatementResultInput,
    ) -> MockResponse<GetStatementResultOutput, GetStatementResultError> {
        let id = r.id().unwrap_or_default().to_string();
        let mut s = self.state();
        s.requests.push(Request::Result { id: id.clone() });
        let rows = match s.statements.iter().find(|st| st.submitted.id == id) {
            None => Err(format!("no statement {id}")),
            Some(st) if st.submitted.batch => Err(format!("{id} is a batch: ask for one of its sub-statements")),
            Some(st) if st.last != Some(StatusString::Finished) => Err(format!("{id} was not seen FINISHED")),
            Some(st) => {
                let sql = st.submitted.sqls.concat();
                Ok(s.answers
                    .iter()
                    .find(|(when, _)| when(&sql))
                    .map_or_else(|| empty_warehouse(&sql), |(_, rows)| rows.clone()))
            }
        };
        let out = rows.and_then(|rows| {
            GetStatementResultOutput::builder()
                .set_records(Some(rows))
                .build()
                .map_err(|e| e.to_string())
        });
        match out {
            Ok(out) => MockResponse::Output(out),
            Err(e) => MockResponse::Error(GetStatementResultError::ValidationException(invalid(&e))),
        }
    }

    fn on_cancel(&self, r: &CancelStatementInput) -> MockResponse<CancelStatementOutput, CancelStatementError> {
        let id = r.id().unwrap_or_default().to_string();
        let mut s = self.state();
        s.requests.push(Request::Cancel { id: id.clone() });
        match s.statements.iter_mut().find(|st| st.submitted.id == id) {
            Some(st) => {
                // Whether there was anything left to cancel: a statement seen ended stays as it ended.
                let running = !matches!(
                    st.last,
                    Some(StatusString::Finished | StatusString::Failed | StatusString::Aborted)
                );
                st.cancelled |= running;
                MockResponse::Output(CancelStatementOutput::builder().status(running).build())
            }
            None => MockResponse::Error(CancelStatementError::ValidationException(invalid(&format!(
                "no statement {id}"
            )))),
        }
    }
}

impl Statement {
    /// The status of the statement's next describe.
    fn status(&self) -> StatusString {
        if self.cancelled {
            return StatusString::Aborted;
        }
        match &self.script.end {
            End::Never => StatusString::Started,
            _ if self.describes < self.script.running => StatusString::Started,
            End::Finished => StatusString::Finished,
            End::Failed { .. } => StatusString::Failed,
        }
    }
}

/// The `DescribeStatement` of `st` at the status it was just given.
fn described(st: &Statement) -> Result<DescribeStatementOutput, String> {
    let status = st.last.clone().unwrap_or(StatusString::Submitted);
    let failure = match (&status, &st.script.end) {
        (StatusString::Failed, End::Failed { step, error, query_id }) => Some((*step, error.as_str(), *query_id)),
        _ => None,
    };
    let sub = &st.submitted;
    let mut out = DescribeStatementOutput::builder()
        .id(&sub.id)
        .status(status.clone())
        .set_database(sub.target.database.clone())
        .set_cluster_identifier(sub.target.cluster.clone())
        .set_workgroup_name(sub.target.workgroup.clone())
        .set_db_user(sub.target.db_user.clone());
    if let Some((_, error, query_id)) = failure {
        out = out.error(error);
        if !sub.batch {
            out = out.redshift_query_id(query_id);
        }
    }
    if status == StatusString::Aborted {
        out = out.error("Query cancelled on user's request");
    }
    if sub.batch {
        out = out.set_sub_statements(Some(sub_statements(sub, &status, failure)?));
    } else {
        out = out.query_string(sub.sqls.concat());
    }
    out.build().map_err(|e| e.to_string())
}

/// A batch's sub-statements at the batch's `status`: all as the batch is, except when it failed: the failing one
/// FAILED with its error and query id, every other one ABORTED (rolled back).
fn sub_statements(
    sub: &Submitted,
    status: &StatusString,
    failure: Option<(usize, &str, i64)>,
) -> Result<Vec<SubStatementData>, String> {
    let each = match status {
        StatusString::Finished => StatementStatusString::Finished,
        StatusString::Aborted | StatusString::Failed => StatementStatusString::Aborted,
        _ => StatementStatusString::Started,
    };
    sub.sqls
        .iter()
        .enumerate()
        .map(|(i, sql)| {
            let mut s = SubStatementData::builder()
                .id(format!("{}:{}", sub.id, i + 1))
                .query_string(sql)
                .status(each.clone());
            if let Some((_, error, query_id)) = failure.filter(|(step, _, _)| *step == i) {
                s = s
                    .status(StatementStatusString::Failed)
                    .error(error)
                    .redshift_query_id(query_id);
            }
            s.build().map_err(|e| e.to_string())
        })
        .collect()
}

/// The rows of `sql` on an empty warehouse: `SELECT 1` is 1, a count 0, a maximum NULL (0 where it is coalesced);
/// any other query (a table's columns, the staging registry) has no rows.
fn empty_warehouse(sql: &str) -> Vec<Vec<Field>> {
    if sql == "SELECT 1" {
        vec![vec![Field::LongValue(1)]]
    } else if sql.starts_with("SELECT count(*) ") || sql.starts_with("SELECT COALESCE(MAX(") {
        vec![vec![Field::LongValue(0)]]
    } else if sql.starts_with("SELECT max(") {
        vec![vec![Field::IsNull(true)]]
    } else {
        Vec::new()
    }
}

fn invalid(message: &str) -> ValidationException {
    ValidationException::builder()
        .message(message)
        .meta(
            ErrorMetadata::builder()
                .code("ValidationException")
                .message(message)
                .build(),
        )
        .build()
}

fn busy() -> ActiveSessionsExceededException {
    let message = "Active sessions exceeded";
    ActiveSessionsExceededException::builder()
        .message(message)
        .meta(
            ErrorMetadata::builder()
                .code("ActiveSessionsExceededException")
                .message(message)
                .build(),
        )
        .build()
}
