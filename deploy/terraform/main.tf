# The DynamoDB table dynacache expects (what `dynacache table create` makes).
variable "table_name" {
  type    = string
  default = "dynacache"
}

resource "aws_dynamodb_table" "cache" {
  name         = var.table_name
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = "key"

  attribute {
    name = "key"
    type = "S"
  }

  attribute {
    name = "mi"
    type = "S"
  }

  # The metadata index: listing, counting and purging a namespace read it, not the table,
  # once it is marked complete: after applying, run `dynacache table index` once.
  global_secondary_index {
    name               = "meta"
    hash_key           = "mi"
    projection_type    = "INCLUDE"
    non_key_attributes = ["e", "k", "kind", "method", "url", "status", "size", "received"]
  }

  ttl {
    attribute_name = "ttl"
    enabled        = true
  }
}

output "table_name" {
  value = aws_dynamodb_table.cache.name
}

output "table_arn" {
  value = aws_dynamodb_table.cache.arn
}
