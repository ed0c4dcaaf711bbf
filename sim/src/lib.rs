//! petal-sim
