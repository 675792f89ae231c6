//! freshet-net
