"""Code both Lambda images share: request plumbing and Lambda runtime facts."""
