//! Waiting without polling: for a key's owner to finish (key waiters), for
//! a record to become durable and for a deadline (the service thread).

pub(crate) mod key_waiters;
pub(crate) mod service;
