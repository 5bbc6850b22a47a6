"""OpenAI's Batch API: files and batches (routes), their Redis records (store), the lines'
validation (lines) and the driver that runs them (driver)."""
