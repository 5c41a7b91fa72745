"""The OpenAI Files and Batch APIs on the router: durable state, line parsing and the batch runner."""
