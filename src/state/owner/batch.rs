//! One batch's plumbing: requests apart from their reply channels, what
//! applying each gave, and the answers sent once the batch is persisted.

use tokio::sync::oneshot;
use tracing::error;

use super::super::{
    Command, Counters, DrainRecord, DrainRequest, Input, ReloadReport, Reply, StateError, audit,
};
use crate::{
    dns::{Data, LoadError},
    health::{
        machine::{Machine, Transition},
        probe::Round,
    },
};

/// A queued command or report, without its reply channel.
pub(super) enum Request {
    Report {
        generation: u64,
        region: String,
        round: Round,
    },
    Drain {
        region: String,
        request: DrainRequest,
    },
    Undrain {
        region: String,
        by: String,
    },
    Reload {
        /// Taken when applied: a load is installed at most once.
        loaded: Option<Result<Box<Data>, LoadError>>,
        by: String,
    },
    /// Taken when applied, like a load.
    Record(Option<audit::Entry>),
}

/// Where each request's answer goes.
pub(super) enum Answer {
    Report(oneshot::Sender<Machine>),
    Drain(Reply<DrainRecord>),
    Undrain(Reply<Option<DrainRecord>>),
    Reload(Reply<ReloadReport>),
    Record(Reply<()>),
}

/// What applying one request gave.
pub(super) enum Outcome {
    Report(Option<Machine>),
    Drain(Result<DrainRecord, StateError>),
    Undrain(Result<Option<DrainRecord>, StateError>),
    Reload(Result<ReloadReport, StateError>),
    Recorded,
    /// An operator command of a batch that could not be persisted.
    NotPersisted,
}

impl Outcome {
    /// Whether the request changed what operators control.
    pub(super) fn changed(&self) -> bool {
        matches!(
            self,
            Self::Drain(Ok(_)) | Self::Undrain(Ok(Some(_))) | Self::Reload(Ok(_))
        )
    }
}

/// Everything one pass over a batch produced.
#[derive(Default)]
pub(super) struct Applied {
    pub(super) outcomes: Vec<Outcome>,
    pub(super) audit: Vec<audit::Entry>,
    pub(super) transitions: Vec<(String, Transition, Round)>,
    pub(super) reloaded: bool,
}

pub(super) fn split(input: Input) -> (Request, Answer) {
    match input {
        Input::Report(r) => (
            Request::Report {
                generation: r.generation,
                region: r.region,
                round: r.round,
            },
            Answer::Report(r.reply),
        ),
        Input::Command(Command::Drain {
            region,
            request,
            reply,
        }) => (Request::Drain { region, request }, Answer::Drain(reply)),
        Input::Command(Command::Undrain { region, by, reply }) => {
            (Request::Undrain { region, by }, Answer::Undrain(reply))
        }
        Input::Command(Command::Reload { loaded, by, reply }) => (
            Request::Reload {
                loaded: Some(loaded),
                by,
            },
            Answer::Reload(reply),
        ),
        Input::Command(Command::Record { entry, reply }) => {
            (Request::Record(Some(entry)), Answer::Record(reply))
        }
    }
}

/// Keeps the first pass's refusals (a refused drain, a failed load) for
/// commands the second pass skipped: they are answered as they were.
pub(super) fn keep_refusals(outcomes: &mut [Outcome], first: Vec<Outcome>) {
    for (now, then) in outcomes.iter_mut().zip(first) {
        let refused = matches!(
            then,
            Outcome::Drain(Err(_)) | Outcome::Undrain(Err(_)) | Outcome::Reload(Err(_))
        );
        if matches!(now, Outcome::NotPersisted) && refused {
            *now = then;
        }
    }
}

/// Sends every answer; an operator change that was not persisted gets the
/// store's error.
pub(super) fn answer(
    answers: Vec<Answer>,
    outcomes: Vec<Outcome>,
    persisted: &Result<(), String>,
    counters: &Counters,
) {
    let not_persisted = || StateError::Persist(persisted.clone().err().unwrap_or_default());
    for (answer, outcome) in answers.into_iter().zip(outcomes) {
        match (answer, outcome) {
            (Answer::Report(reply), Outcome::Report(Some(machine))) => {
                let _ = reply.send(machine);
            }
            (Answer::Drain(reply), Outcome::Drain(result)) => {
                let _ = reply.send(result);
            }
            (Answer::Undrain(reply), Outcome::Undrain(result)) => {
                let _ = reply.send(result);
            }
            (Answer::Reload(reply), Outcome::Reload(result)) => {
                let counter = match result {
                    Ok(_) => &counters.reloads,
                    Err(_) => &counters.reload_failures,
                };
                Counters::bump(counter);
                if let Err(error) = &result {
                    error!(%error, "reload failed; still serving the previous data");
                }
                let _ = reply.send(result);
            }
            (Answer::Drain(reply), Outcome::NotPersisted) => {
                let _ = reply.send(Err(not_persisted()));
            }
            (Answer::Undrain(reply), Outcome::NotPersisted) => {
                let _ = reply.send(Err(not_persisted()));
            }
            (Answer::Record(reply), Outcome::Recorded) => {
                let _ = reply.send(persisted.clone().map_err(StateError::Persist));
            }
            (Answer::Record(reply), Outcome::NotPersisted) => {
                let _ = reply.send(Err(not_persisted()));
            }
            (Answer::Reload(reply), Outcome::NotPersisted) => {
                Counters::bump(&counters.reload_failures);
                let _ = reply.send(Err(not_persisted()));
            }
            // A stale report: dropping its answer ends the loop that sent it.
            _ => {}
        }
    }
}
