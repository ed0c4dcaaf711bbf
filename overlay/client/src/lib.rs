//! petal-client (being written).
