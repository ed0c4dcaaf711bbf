//! petald (being written).
fn main() {}
