-- Reserved for issue 13 work in progress; filled in by its owner.
SELECT 1;
