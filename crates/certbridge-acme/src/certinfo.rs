//! certinfo (to be written).
