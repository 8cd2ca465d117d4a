//! The tailmesh node agent. The data path (issue #4) is not built yet; this
//! crate currently only reserves its place in the workspace.
