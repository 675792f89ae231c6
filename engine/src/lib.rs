//! freshet-engine
