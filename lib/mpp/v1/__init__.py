"""Generated from proto/mpp/v1 by scripts/gen_proto.sh; do not edit."""
