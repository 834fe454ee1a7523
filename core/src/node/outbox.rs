//! What the node hands its shell, a sub-state: the actions `Node::drain` takes, and the frames
//! held until the startup job is durable.
//!
//! Every frame names this incarnation, and the leader records what it hears: a frame (even a
//! forwarded request) sent before the identity file is durable could get an incarnation recorded
//! that a crash then loses, and the restarted node would be refused as a stranger. That holds at
//! a restart too: the identity file and the log's names read back may be only in the page cache
//! (a process stopped before the directory sync that made them durable; a power loss that then
//! takes the log's names makes the next start a new incarnation), and the startup job's syncs
//! make them durable. The simulator found a node refused that way.
//!
//! Invariants (by construction): frames are held only from the start, and released (or, by a
//! node that stopped first, discarded) once, in the order they were sent; none is held after.

use super::{Action, Event, Outgoing};

pub(super) struct Outbox {
    actions: Vec<Action>,
    /// Frames held until the startup job is durable (`None`: released or discarded; nothing
    /// sets it again, so none is ever held after).
    held: Option<Vec<Outgoing>>,
}

impl Outbox {
    /// Starts with `events` (startup's); frames wait for `release` (the startup job).
    pub(super) fn new(events: Vec<Event>) -> Outbox {
        Outbox {
            actions: events.into_iter().map(Action::Event).collect(),
            held: Some(Vec::new()),
        }
    }

    pub(super) fn push(&mut self, action: Action) {
        assert!(
            !matches!(action, Action::Send(_)),
            "frames go through Outbox::send"
        );
        self.actions.push(action);
    }

    pub(super) fn event(&mut self, e: Event) {
        self.actions.push(Action::Event(e));
    }

    pub(super) fn events(&mut self, events: impl IntoIterator<Item = Event>) {
        self.actions.extend(events.into_iter().map(Action::Event));
    }

    /// An event the shell must see before anything queued (boot's, about the start itself).
    pub(super) fn event_first(&mut self, e: Event) {
        self.actions.insert(0, Action::Event(e));
    }

    pub(super) fn send(&mut self, out: Outgoing) {
        match &mut self.held {
            Some(held) => held.push(out),
            None => self.actions.push(Action::Send(out)),
        }
    }

    /// The startup job is durable (or there was none): held frames go, in order.
    pub(super) fn release(&mut self) {
        if let Some(held) = self.held.take() {
            self.actions.extend(held.into_iter().map(Action::Send));
        }
    }

    /// The node stopped before its startup job completed: held frames never leave.
    pub(super) fn discard_held(&mut self) {
        self.held = None;
    }

    pub(super) fn take(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }
}
