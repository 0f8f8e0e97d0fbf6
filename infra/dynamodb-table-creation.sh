#!/usr/bin/env bash
# Creates the coaching-conversations table as infra/lambda-deployment.yaml defines it
# (on-demand by default, GSI user-index, TTL on expires_at, point-in-time recovery), with
# the AWS CLI. Works against DynamoDB Local too:
#   infra/dynamodb-table-creation.sh http://127.0.0.1:8000
# Without an argument it uses the CLI's configured region and account. Provisioned capacity
# instead (README, "Capacity"): BILLING_MODE=PROVISIONED READ_UNITS=5 WRITE_UNITS=5.
set -euo pipefail
endpoint=()
if [ $# -ge 1 ]; then endpoint=(--endpoint-url "$1"); fi
table="${DYNAMODB_TABLE_COACHING:-coaching-conversations}"
billing=(--billing-mode PAY_PER_REQUEST)
gsi_capacity=""
if [ "${BILLING_MODE:-PAY_PER_REQUEST}" = PROVISIONED ]; then
  billing=(--billing-mode PROVISIONED --provisioned-throughput "ReadCapacityUnits=${READ_UNITS:-5},WriteCapacityUnits=${WRITE_UNITS:-5}")
  gsi_capacity=", \"ProvisionedThroughput\": {\"ReadCapacityUnits\": ${READ_UNITS:-5}, \"WriteCapacityUnits\": ${WRITE_UNITS:-5}}"
fi

aws dynamodb create-table "${endpoint[@]}" \
  --table-name "$table" \
  --attribute-definitions \
      AttributeName=conversation_id,AttributeType=S \
      AttributeName=user_id,AttributeType=S \
      AttributeName=last_updated,AttributeType=S \
  --key-schema AttributeName=conversation_id,KeyType=HASH \
  "${billing[@]}" \
  --global-secondary-indexes "[{
      \"IndexName\": \"user-index\",
      \"KeySchema\": [
        {\"AttributeName\": \"user_id\", \"KeyType\": \"HASH\"},
        {\"AttributeName\": \"last_updated\", \"KeyType\": \"RANGE\"}
      ],
      \"Projection\": {\"ProjectionType\": \"ALL\"}${gsi_capacity}
    }]" \
  --sse-specification Enabled=true

aws dynamodb wait table-exists "${endpoint[@]}" --table-name "$table"
aws dynamodb update-time-to-live "${endpoint[@]}" --table-name "$table" \
  --time-to-live-specification Enabled=true,AttributeName=expires_at
aws dynamodb update-continuous-backups "${endpoint[@]}" --table-name "$table" \
  --point-in-time-recovery-specification PointInTimeRecoveryEnabled=true || \
  echo "point-in-time recovery not available here (DynamoDB Local); enable it in AWS" >&2
echo "created $table"
