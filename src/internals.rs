//! Items that the tests, benches and measurement tools need and users should not: **not
//! the stable API**. Anything here may change or go away in any release.
//!
//! - [`ReferenceInProcess`]: the reference client as an in-process runner client, with
//!   or without one deliberate bug ([`Mutation`]), to measure what the catalogue
//!   catches (the kill matrix).
//! - [`kill_matrix`]: running cases against every mutant and rendering the result.
//! - [`impossible_number`]: the reference client's check for numbers no QEMU agent writes,
//!   for the test clients that must refuse the same replies.
//! - The runner's process plumbing ([`kill_after`], [`count_group_members`],
//!   [`finish_reaping`], [`shell_quote`]), its judge's helpers ([`deadline_grace_ms`],
//!   [`describe_outcomes`], [`duty_requirement`], [`is_side_effecting`], [`case_deadline`],
//!   [`compare_ids`]), the fault engine the channel drives ([`FaultEngine`]) and the timeline the HTML report draws ([`Timeline`] and its parts).
//! - The README's compatibility matrix: the clients it shows ([`readme_clients`]) and
//!   the splice of a fresh table between its markers ([`splice_readme`]).
//! - The judge itself ([`judge`], [`UNKNOWN_CLASS`]): a user reads its [`Judgement`]s in
//!   the case results.
//! - Whole modules the binary, the tests and the benches drive: [`cli`] (the command
//!   line), [`qemu`] (real QEMU guests from `qemu-images/`), [`libvirt`] (real libvirt as a
//!   client under test), [`real_agent`] (the real qemu-ga, read-only, for side-by-side
//!   checks).
//!
//! [`Judgement`]: crate::runner::Judgement

pub mod kill_matrix;

/// The `qga-harness` command line: [`cli::main`] is the binary.
pub mod cli {
    pub use crate::cli::*;
}

/// A real QEMU guest from `qemu-images/`, its ports and its control port.
pub mod qemu {
    pub use crate::qemu::*;
}

/// Real libvirt driven as a client under test.
pub mod libvirt {
    pub use crate::libvirt::*;
}

/// Starting the real qemu-ga, read-only, for side-by-side checks.
pub mod real_agent {
    pub use crate::real_agent::*;
}

pub use crate::fault::engine::{Context, FaultEngine, Fired};
pub use crate::report::matrix::{readme_clients, splice_readme};
pub use crate::runner::adapter::kill_after;
pub use crate::runner::case::case_deadline;
pub use crate::runner::discover::compare_ids;
pub use crate::runner::judge::{
    deadline_grace_ms, describe_outcomes, duty_requirement, is_side_effecting, judge, UNKNOWN_CLASS,
};
pub use crate::runner::process::{count_group_members, finish_reaping};
pub use crate::runner::template::shell_quote;
pub use crate::runner::timeline::{
    Block, BlockKind, BlockWrite, Lane, Mark, MarkKind, PairingSource, StepBar, Timeline,
    TranscriptLine,
};

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

pub use crate::client::mutation::Mutation;
/// The reply check the reference client applies to numbers, for test clients that must
/// refuse the same replies (a number no QEMU agent writes).
pub use crate::client::reply::impossible_number;
use crate::client::{Client, Error};
use crate::runner::{
    Answer, BoxFuture, FailureClass, InProcessClient, InProcessSession, StepRequest,
};

/// The reference client, driven in the runner's process; with a mutation, a mutant.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReferenceInProcess {
    pub mutation: Option<Mutation>,
}

impl ReferenceInProcess {
    /// The reference client with `mutation`.
    pub fn mutant(mutation: Mutation) -> ReferenceInProcess {
        ReferenceInProcess {
            mutation: Some(mutation),
        }
    }
}

impl InProcessClient for ReferenceInProcess {
    fn name(&self) -> String {
        match self.mutation {
            Some(m) => format!("the reference client with the bug '{}'", m.name()),
            None => "the reference client (in process)".to_owned(),
        }
    }

    fn open<'a>(&'a self, socket: &'a Path) -> BoxFuture<'a, Box<dyn InProcessSession>> {
        let mut builder = Client::builder(socket);
        if let Some(mutation) = self.mutation {
            builder = builder.mutation(mutation);
        }
        let client = builder.build();
        Box::pin(async move { Box::new(ReferenceSession { client }) as Box<dyn InProcessSession> })
    }
}

struct ReferenceSession {
    client: Client,
}

impl InProcessSession for ReferenceSession {
    fn execute<'a>(&'a mut self, request: &'a StepRequest) -> BoxFuture<'a, Answer> {
        Box::pin(async move {
            let arguments = request.arguments.clone().map(Value::Object);
            let result = self
                .client
                .execute_within(
                    &request.execute,
                    arguments.as_ref(),
                    Duration::from_millis(request.timeout_ms),
                )
                .await;
            answer(result)
        })
    }

    fn peak_buffer_bytes(&self) -> Option<u64> {
        Some(self.client.peak_buffer_bytes())
    }
}

/// The runner's view of a call's result, as `qga-harness session` reports it.
fn answer(result: Result<Value, Error>) -> Answer {
    match result {
        Ok(value) => Answer::Return { value },
        Err(e) => {
            let class = e.class().to_owned();
            let desc = e.desc();
            match FailureClass::from_class(&class) {
                Some(class) if e.agent_error().is_none() => Answer::ClientError { class, desc },
                _ => Answer::AgentError { class, desc },
            }
        }
    }
}
