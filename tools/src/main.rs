//! The `freshet` binary: broker (`freshet start`) and client-side tools.
fn main() {}
