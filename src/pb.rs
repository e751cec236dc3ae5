//! Generated protobuf and gRPC code for `proto/mysticchallenge/v1/gateway.proto`,
//! fenced in one module with the lints it needs.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

tonic::include_proto!("mysticchallenge.v1");
