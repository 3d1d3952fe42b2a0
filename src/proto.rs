//! The protobuf messages and services dtx speaks, generated at build time
//! from `proto/`: dtm's API (`dtmgimp`) and the workflow call-back
//! (`workflow`).

/// `proto/dtmgimp.proto`: the service `dtmgimp.Dtm` and its messages.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod dtmgimp {
    tonic::include_proto!("dtmgimp");

    /// The descriptor set server reflection serves.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("dtmgimp_descriptor");
}

/// `proto/wf.proto`: the service `workflow.Workflow` clients register.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod workflow {
    tonic::include_proto!("workflow");
}
