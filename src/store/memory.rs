//! placeholder (being written)
#![allow(missing_docs)]
#[derive(Debug)]
pub struct MemoryStore;
impl MemoryStore {
    pub fn new() -> Self {
        MemoryStore
    }
}
