//! petal-node (being written).
