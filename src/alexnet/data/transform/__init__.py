"""A batch's float arithmetic on its device (§2, §4.1): `BatchTransform`, its compiled CPU form
and the pool its CPU output is written into."""
