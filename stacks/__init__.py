"""The CDK app's infrastructure: configuration, the stack and its function construct."""
