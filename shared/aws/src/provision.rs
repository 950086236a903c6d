//! Creates the resources the SAM template creates on AWS — the table (with its index
//! and TTL), the bucket, each agent's FIFO queue and DLQ, the schedule group — on an
//! emulator, for `aos dev --backend aws` and the tests. Idempotent: what exists is
//! left alone.

use crate::AwsBackend;
use crate::dynamo::{GSI, GSI_PK, GSI_SK, PK, SK, TTL};
use crate::error::{is_code, sdk_error};
use aos_kernel::ports::PortError;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
};

fn rejected(e: impl std::fmt::Display) -> PortError {
    PortError::Rejected(e.to_string())
}

/// Creates whatever of the stack is missing for `agents`.
pub async fn provision(aws: &AwsBackend, agents: &[&str]) -> Result<(), PortError> {
    let c = &aws.clients;
    let table = &aws.settings.table;
    let attr = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .map_err(rejected)
    };
    let key = |name: &str, t: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(t)
            .build()
            .map_err(rejected)
    };
    let created = c
        .dynamodb
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr(PK)?)
        .attribute_definitions(attr(SK)?)
        .attribute_definitions(attr(GSI_PK)?)
        .attribute_definitions(attr(GSI_SK)?)
        .key_schema(key(PK, KeyType::Hash)?)
        .key_schema(key(SK, KeyType::Range)?)
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(GSI)
                .key_schema(key(GSI_PK, KeyType::Hash)?)
                .key_schema(key(GSI_SK, KeyType::Range)?)
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::All)
                        .build(),
                )
                .build()
                .map_err(rejected)?,
        )
        .send()
        .await;
    match created {
        Ok(_) => {
            c.dynamodb
                .update_time_to_live()
                .table_name(table)
                .time_to_live_specification(
                    TimeToLiveSpecification::builder()
                        .attribute_name(TTL)
                        .enabled(true)
                        .build()
                        .map_err(rejected)?,
                )
                .send()
                .await
                .map_err(|e| sdk_error("DynamoDB UpdateTimeToLive", e))?;
        }
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_in_use_exception()) => {}
        Err(e) => return Err(sdk_error("DynamoDB CreateTable", e)),
    }

    match c
        .s3
        .create_bucket()
        .bucket(&aws.settings.bucket)
        .send()
        .await
    {
        Ok(_) => {}
        Err(e)
            if e.as_service_error().is_some_and(|s| {
                s.is_bucket_already_owned_by_you() || s.is_bucket_already_exists()
            }) => {}
        Err(e) => return Err(sdk_error("S3 CreateBucket", e)),
    }

    // Creating a group that exists would be harmless on AWS (a conflict), but some
    // emulators replace it and drop its schedules: look first. One group for
    // wake-ups, one for task schedules.
    let mut groups = vec![&aws.settings.schedule_group];
    if aws.settings.task_schedules.group != aws.settings.schedule_group {
        groups.push(&aws.settings.task_schedules.group);
    }
    for group in groups {
        match c.scheduler.get_schedule_group().name(group).send().await {
            Ok(_) => {}
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                match c.scheduler.create_schedule_group().name(group).send().await {
                    Ok(_) => {}
                    Err(e)
                        if e.as_service_error()
                            .is_some_and(|s| is_code(s.code(), &["ConflictException"])) => {}
                    Err(e) => return Err(sdk_error("Scheduler CreateScheduleGroup", e)),
                }
            }
            Err(e) => return Err(sdk_error("Scheduler GetScheduleGroup", e)),
        }
    }

    let mut queues = aws.queues.clone();
    queues.set_create_missing(true);
    for agent in agents {
        queues.queue(agent).await?;
    }
    Ok(())
}
