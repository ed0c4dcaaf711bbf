//! petal (being written).
fn main() {}
