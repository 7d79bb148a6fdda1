//! SASL2 tasks (XEP-0388 §continue): steps a login must complete after its mechanism
//! succeeded and before `<success>`, such as a second factor or a forced password change.
//!
//! ```text
//! mechanism success --> <continue><tasks><task>T</task>...</tasks></continue>
//!   <next task='T'><initial-response/>...</next> --> <challenge>/<task-data> ... <response>/<task-data>
//!   task done --> <continue> (another required task) | <success> (inline features run now, F-10)
//! ```
//!
//! The client picks one of the offered tasks; a login needs another `<continue>` while any
//! registered task still says it is [`required`](Sasl2Task::required). Token mechanisms (FAST)
//! never get tasks (F-28).

use std::fmt;

use async_trait::async_trait;
use minidom::Element;

use super::{AuthenticateRequest, Failure, StreamInfo};

/// Longest task name accepted (XEP-0388 schema: `SaslMechName`, 1..20 characters).
pub const MAX_TASK_NAME: usize = 20;

/// What a task sees of the login it belongs to.
#[derive(Debug)]
#[non_exhaustive]
pub struct TaskContext<'a> {
    /// The stream.
    pub stream: &'a StreamInfo,
    /// The `<authenticate>` request.
    pub request: &'a AuthenticateRequest,
    /// The account the mechanism authenticated.
    pub username: &'a str,
    /// The mechanism that succeeded.
    pub mechanism: &'a str,
    /// Tasks already completed in this login, in order.
    pub completed: &'a [String],
}

/// A task type a server offers (one registration per task name).
///
/// # Security contract
/// - `required` decides whether the login may finish without this task: returning `false`
///   for an account that needs a second factor logs it in without one.
/// - Inputs to the session are attacker-controlled (the client is authenticated by its
///   mechanism but not yet logged in): bounded work, constant-time secret comparison.
#[async_trait]
pub trait Sasl2Task: fmt::Debug + Send + Sync {
    /// The task name in `<task>` and `<next task='...'>` (at most [`MAX_TASK_NAME`]).
    fn name(&self) -> &str;

    /// Whether this login must still complete this task (looked at again after every task,
    /// so a group of alternatives can stop being required once one of them completed).
    async fn required(&self, ctx: &TaskContext<'_>) -> bool;

    /// Starts the task for one login.
    fn start(&self, ctx: &TaskContext<'_>) -> Box<dyn TaskSession>;
}

/// Input to a task step: the `<initial-response>` of `<next>` or a `<response>`, and any
/// foreign-namespace payload (children of `<next>` or `<task-data>`).
#[derive(Clone, Copy)]
#[non_exhaustive]
pub struct TaskInput<'a> {
    /// Decoded SASL data, if the client sent some.
    pub data: Option<&'a [u8]>,
    /// Payload elements.
    pub payloads: &'a [Element],
}

impl fmt::Debug for TaskInput<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskInput")
            .field("data", &self.data.map(<[u8]>::len))
            .field("payloads", &crate::xmpp::RedactedList(self.payloads))
            .finish()
    }
}

/// The outcome of one task step.
#[derive(Debug)]
#[non_exhaustive]
pub enum TaskStep {
    /// Send a `<challenge>` with these bytes.
    Challenge(Vec<u8>),
    /// Send a `<task-data>` with these payload elements.
    Data(Vec<Element>),
    /// The task is done; `additional_data` (if any) goes into the next `<continue>` or the
    /// `<success>`.
    Done {
        /// Success data of the task.
        additional_data: Option<Vec<u8>>,
    },
    /// The task failed: the login fails (and, since `<continue>` was sent, the stream ends:
    /// S-25 allows no new `<authenticate>` on it).
    Failure(Failure),
}

/// One running task of one login.
#[async_trait]
pub trait TaskSession: Send {
    /// Processes the client's next message for this task.
    async fn step(&mut self, input: TaskInput<'_>) -> TaskStep;
}
