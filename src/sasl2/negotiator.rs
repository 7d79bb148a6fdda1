//! placeholder (being written)
#![allow(missing_docs)]
pub struct Sasl2Server;
pub struct Negotiator;
pub enum NegotiatorEvent {}
