"""What several families share: the learners of each framework (scored in one way), shard files and
their writing, image and feature shards."""
