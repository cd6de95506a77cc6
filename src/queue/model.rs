//! A plain model of a queue, for the unit tests and the fuzz target: what
//! the C module does, written as simply as possible.

use std::collections::VecDeque;

/// The behaviour of the C module, written as plainly as possible.
#[derive(Default)]
pub struct Model {
    pub items: VecDeque<(Vec<u8>, Vec<u8>)>,
    pub mode: i32,
    pub max: usize,
}

impl Model {
    pub fn add(&mut self, k: &[u8], v: &[u8]) {
        if self.mode != 0 {
            if let Some(pos) = self.items.iter().position(|(ik, _)| ik == k) {
                if self.mode == 1 {
                    return;
                }
                self.items.remove(pos);
            }
        }
        self.items.push_back((k.to_vec(), v.to_vec()));
        if self.max > 0 && self.items.len() > self.max {
            self.items.pop_front();
        }
    }
}
