"""medaudit's Flower app: its components are medaudit's own ClientApp and ServerApp."""
