#!/usr/bin/env bash
# Deploy one image tag to the stack, migrations first:
#   1. point the migrate task definition at the new image (nothing that serves changes yet),
#   2. run it once and wait; stop here unless it exits 0,
#   3. move the web, bot, replicator and scheduled jobs to the new image (ECS rolls them; see ecs/stack.yaml).
# Usage: ecs/deploy.sh TAG [extra --parameter-overrides ...]
# Environment: STACK (default imagecredits), and AWS credentials/region as for any aws command.
# The stack keeps every other parameter's current value (--parameter-overrides only changes the ones named).
set -euo pipefail
TAG=${1:?usage: ecs/deploy.sh TAG [Name=Value ...]}
shift
STACK=${STACK:-imagecredits}
HERE=$(cd "$(dirname "$0")" && pwd)

output() {
    aws cloudformation describe-stacks --stack-name "$STACK" \
        --query "Stacks[0].Outputs[?OutputKey=='$1'].OutputValue" --output text
}

echo "1/3 migrate task definition -> $TAG"
aws cloudformation deploy --stack-name "$STACK" --template-file "$HERE/stack.yaml" \
    --capabilities CAPABILITY_IAM --no-fail-on-empty-changeset \
    --parameter-overrides MigrateImageTag="$TAG" "$@"

echo "2/3 running migrations with $TAG"
CLUSTER=$(output ClusterName)
TASK=$(aws ecs run-task --cluster "$CLUSTER" --task-definition "$(output MigrateTaskDefinition)" \
    --launch-type EC2 --started-by "deploy-$TAG" --query 'tasks[0].taskArn' --output text)
aws ecs wait tasks-stopped --cluster "$CLUSTER" --tasks "$TASK"
CODE=$(aws ecs describe-tasks --cluster "$CLUSTER" --tasks "$TASK" \
    --query 'tasks[0].containers[0].exitCode' --output text)
if [ "$CODE" != "0" ]; then
    echo "migrate exited with $CODE; nothing else was changed. Logs: aws logs tail /ecs/$STACK --since 15m" >&2
    exit 1
fi

echo "3/3 services -> $TAG"
aws cloudformation deploy --stack-name "$STACK" --template-file "$HERE/stack.yaml" \
    --capabilities CAPABILITY_IAM --no-fail-on-empty-changeset \
    --parameter-overrides ImageTag="$TAG" MigrateImageTag="$TAG" "$@"
echo "deployed $TAG"
